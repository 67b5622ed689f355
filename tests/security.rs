//! Mutual TLS end to end: who gets in, who gets what, and certificates
//! renewed under load without a restart or a failed request.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use common::certs::{self, client_transport};
use common::cluster::wait_for_members;
use common::raw::RawConn;
use common::{TestNode, admin_get, metric, runtime, wait_for};
use levee_node::client::{Client, ClientConfig, ClientError, Connection};
use levee_node::cluster::map::NodeSpec;
use levee_node::proto::{ClientRequest, NodeRequest, Request, RequestFrame, WireError, handshake};
use levee_node::tls::issue::{self, Validity};
use levee_node::tls::{Credentials, Transport};

const TIMEOUT: Duration = Duration::from_secs(5);
const YEAR: Duration = Duration::from_secs(365 * 86_400);

/// A directory with a CA of its own, a node pair for `hosts` and the
/// client "root".
fn own_ca(dir: &Path, hosts: &[&str], node_validity: Validity) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = dir.join(issue::CA_KEY);
    issue::create_ca(dir, &ca_key, Validity::for_lifetime(YEAR), false).unwrap();
    let hosts: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
    issue::create_node(dir, &ca_key, &hosts, node_validity).unwrap();
    issue::create_client(dir, &ca_key, "root", Validity::for_lifetime(YEAR)).unwrap();
    dir.to_owned()
}

/// The error of a connection to `node` as client "root" of `certs`,
/// which must be refused.
fn refused(node: &TestNode, certs: &Path) -> ClientError {
    let transport = Transport::Tls(Credentials::client(certs, "root").unwrap());
    runtime()
        .block_on(Connection::connect(
            &node.addr,
            &transport,
            TIMEOUT,
            8 << 20,
        ))
        .err()
        .expect("refused")
}

/// Runs `levee-node` with `extra` (and no TLS settings from the
/// environment) until it exits: for the starts that must fail.
fn node_once(dir: &Path, extra: &[&str]) -> std::process::Output {
    std::process::Command::new(common::bin("levee-node"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", &common::free_addr()])
        .args(["--admin", &common::free_addr()])
        .args(extra)
        .env_remove("LEVEE_CONFIG")
        .env_remove("LEVEE_CERTS_DIR")
        .env_remove("LEVEE_INSECURE")
        .output()
        .unwrap()
}

fn client_with(node: &TestNode, transport: Transport) -> Client {
    Client::new(ClientConfig {
        endpoints: vec![node.addr.clone()],
        transport,
        attempt_timeout: Duration::from_secs(2),
        request_timeout: TIMEOUT,
        ..ClientConfig::default()
    })
}

#[test]
fn a_plaintext_client_gets_nothing_from_a_tls_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    // The levee handshake in the clear: the node expects a TLS hello, sees
    // garbage, answers at most a TLS alert, and closes.
    let mut raw = RawConn::plain(&node.addr);
    raw.send(&handshake::client_hello());
    let mut got = Vec::new();
    let ended = match raw.read_to_end(&mut got) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(ended, "the node closes the connection");
    assert!(!got.starts_with(b"LEVE"), "no levee answer: {got:?}");
    assert!(got.len() < 64, "an alert at most: {got:?}");
    // The library client, plaintext.
    let err = runtime()
        .block_on(client_with(&node, Transport::Plain).put(b"k", b"v"))
        .unwrap_err();
    assert!(!err.to_string().is_empty());
    // The CLI, told to be insecure.
    let out = node.cli(&["--insecure", "put", "k", "v"], None);
    assert_eq!(out.status.code(), Some(1));
    // And with certificates it works.
    runtime()
        .block_on(node.client().put(b"k", b"v"))
        .expect("a client with a certificate is served");
}

#[test]
fn a_client_certificate_cannot_send_node_messages() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    runtime().block_on(async {
        let conn = Connection::connect(&node.addr, &client_transport(), TIMEOUT, 8 << 20)
            .await
            .unwrap();
        let join = NodeRequest::Join(NodeSpec {
            addr: node.addr.clone(),
            admin: node.admin.clone(),
            zone: "evil".into(),
            capacity: 1_000_000,
            join_token: 7,
        });
        let answer = conn.request(Request::Node(join), TIMEOUT).await;
        match answer {
            Err(ClientError::Server(WireError::PermissionDenied { detail })) => {
                assert!(detail.contains("node-only"), "{detail}");
                assert!(detail.contains("root"), "names the certificate: {detail}");
            }
            other => panic!("expected PermissionDenied, got {other:?}"),
        }
        // The same connection still serves client operations.
        let pong = conn
            .request(Request::Client(ClientRequest::Ping), TIMEOUT)
            .await;
        assert!(pong.is_ok(), "{pong:?}");
    });
    // A raw frame, as any byte stream with a client certificate could
    // send: a Raft message is refused the same way.
    let mut raw = RawConn::handshaken(&node.addr);
    raw.send_request(&RequestFrame {
        id: 9,
        timeout_ms: 5000,
        request: Request::Node(NodeRequest::Raft {
            cluster_id: 1,
            target: 1,
            rpc: levee_node::proto::RaftRpc::Vote,
            payload: vec![1, 2, 3],
        }),
    });
    let response = raw.read_response();
    assert_eq!(response.id, 9);
    assert!(
        matches!(response.result, Err(WireError::PermissionDenied { .. })),
        "{:?}",
        response.result
    );
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let stranger = own_ca(
        &dir.path().join("stranger"),
        &["127.0.0.1"],
        Validity::for_lifetime(YEAR),
    );
    let err = refused(&node, &stranger);
    assert!(matches!(err, ClientError::Tls { .. }), "{err}");
    let out = node.cli(
        &["--certs-dir", stranger.to_str().unwrap(), "get", "k"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TLS"), "{stderr}");
}

#[test]
fn a_node_whose_certificate_lacks_its_address_is_refused_by_clients() {
    let dir = tempfile::tempdir().unwrap();
    // Valid for 127.0.0.1 only; the harness puts nodes on 127.0.0.2 and up.
    let wrong = own_ca(
        &dir.path().join("certs"),
        &["127.0.0.1"],
        Validity::for_lifetime(YEAR),
    );
    // Not waited on through its admin port, which refuses us the same way.
    let node = TestNode::spawn_named(
        dir.path(),
        "node",
        &["--certs-dir", wrong.to_str().unwrap()],
    );
    assert!(!node.addr.starts_with("127.0.0.1:"));
    wait_for("the protocol port", common::START_DEADLINE, || {
        std::net::TcpStream::connect(&node.addr).ok().map(|_| ())
    });
    let err = refused(&node, &wrong);
    let text = err.to_string();
    assert!(text.contains("not valid for name"), "{text}");
}

#[test]
fn health_is_open_and_everything_else_on_the_admin_port_needs_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let Transport::Tls(credentials) = client_transport() else {
        unreachable!()
    };
    let anonymous = Some(credentials.anonymous_config());
    for path in ["/health/live", "/health/ready"] {
        let answer = admin_get(&node.admin, path, anonymous.clone()).expect("answers");
        assert_eq!(answer.status, 200, "{path}");
    }
    for path in ["/metrics", "/nothing-here"] {
        let answer = admin_get(&node.admin, path, anonymous.clone()).expect("answers");
        assert_eq!(answer.status, 403, "{path}");
        assert!(
            answer.body.contains("client certificate"),
            "{}",
            answer.body
        );
    }
    // Never plaintext.
    assert_eq!(admin_get(&node.admin, "/health/live", None), None);
    // With the client certificate: the metrics, with the expiry gauge.
    let metrics = node.admin_get("/metrics").expect("answers");
    assert_eq!(metrics.status, 200);
    let expiry = metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("levee_cert_expiry_timestamp_seconds{role=\"node\"} "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the gauge");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    let left = expiry - now;
    assert!(left > 300.0 * 86_400.0, "{left}");
}

#[test]
fn an_expired_certificate_is_a_clear_error_naming_the_file_and_the_time() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let expired = Validity {
        not_before: now - 2 * YEAR,
        not_after: now - Duration::from_secs(86_400),
    };
    let certs = own_ca(&dir.path().join("certs"), &["127.0.0.1"], expired);
    let at = humantime::format_rfc3339_seconds(expired.not_after).to_string();
    let at = &at[..at.len() - 1]; // whole seconds either way; drop the 'Z'.
    let node = node_once(dir.path(), &["--certs-dir", certs.to_str().unwrap()]);
    assert!(!node.status.success());
    let stderr = String::from_utf8_lossy(&node.stderr);
    assert!(
        stderr.contains("node.crt") && stderr.contains("expired"),
        "{stderr}"
    );
    assert!(stderr.contains(at), "names {at}: {stderr}");

    // A client's expired certificate, the same.
    issue::create_client(&certs, &certs.join(issue::CA_KEY), "old", expired).unwrap();
    let out = std::process::Command::new(common::bin("levee"))
        .args([
            "--certs-dir",
            certs.to_str().unwrap(),
            "--user",
            "old",
            "get",
            "k",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("client.old.crt") && stderr.contains(at),
        "{stderr}"
    );
}

#[test]
fn a_node_without_certificates_or_insecure_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = node_once(dir.path(), &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--certs-dir") && stderr.contains("--insecure"),
        "{stderr}"
    );
}

#[test]
fn an_insecure_node_serves_plaintext_when_asked_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--insecure"]);
    runtime()
        .block_on(node.client().put(b"k", b"v"))
        .expect("plaintext served");
    let out = node.cli(&["get", "k"], None);
    assert!(out.status.success(), "{out:?}");
    assert!(node.log().contains("--insecure"), "the node says so");
}

/// Every node's certificate re-issued in place, one after the other,
/// while clients write and read, some on fresh connections: no request
/// fails, and each node reports its new expiry without a restart.
#[test]
fn every_nodes_certificate_rotates_under_load_with_no_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    // One CA; each node its own directory, as on separate machines.
    let base = dir.path().join("ca");
    std::fs::create_dir_all(&base).unwrap();
    certs::issue_into(&base);
    let node_dir = |i: usize| {
        let d = dir.path().join(format!("certs-{i}"));
        std::fs::create_dir_all(&d).unwrap();
        for f in [
            "ca.crt",
            "ca.key",
            "node.crt",
            "node.key",
            "client.root.crt",
            "client.root.key",
        ] {
            std::fs::copy(base.join(f), d.join(f)).unwrap();
        }
        d
    };
    let dirs: Vec<PathBuf> = (0..3).map(node_dir).collect();
    let mut nodes: Vec<TestNode> = Vec::new();
    for (i, certs) in dirs.iter().enumerate() {
        let seed = nodes.first().map(|n: &TestNode| n.addr.clone());
        let mut extra = vec!["--certs-dir", certs.to_str().unwrap()];
        extra.extend(["--zone", ["z1", "z2", "z3"][i]]);
        match &seed {
            Some(seed) => extra.extend(["--join", seed.as_str()]),
            None => extra.push("--init"),
        }
        extra.extend(common::cluster::FAST_RAFT);
        nodes.push(TestNode::start_named(dir.path(), &format!("n{i}"), &extra));
    }
    wait_for_members(&nodes, 3);
    let endpoints: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let transport = nodes[0].transport.clone();
    let expiry = |node: &TestNode| {
        let body = node.admin_get("/metrics").filter(|a| a.status == 200)?.body;
        body.lines()
            .find(|l| l.starts_with("levee_cert_expiry_timestamp_seconds{role=\"node\"}"))?
            .rsplit_once(' ')?
            .1
            .parse::<f64>()
            .ok()
    };
    let before: Vec<f64> = nodes.iter().map(|n| expiry(n).expect("gauge")).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let load: Vec<_> = (0..3)
        .map(|worker| {
            let (stop, ok, failed, errors) =
                (stop.clone(), ok.clone(), failed.clone(), errors.clone());
            let (endpoints, transport) = (endpoints.clone(), transport.clone());
            std::thread::spawn(move || {
                let rt = runtime();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // A fresh client (so fresh connections and TLS
                    // handshakes) every 20 requests.
                    let client = Client::new(ClientConfig {
                        endpoints: endpoints.clone(),
                        transport: transport.clone(),
                        ..ClientConfig::default()
                    });
                    for _ in 0..20 {
                        let key = format!("w{worker}-{}", i % 200);
                        let result = rt.block_on(async {
                            client.put(key.as_bytes(), b"value").await?;
                            client.get(key.as_bytes()).await.map(|_| ())
                        });
                        match result {
                            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                errors.lock().unwrap().push(e.to_string());
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                        i += 1;
                    }
                }
            })
        })
        .collect();

    let levee = common::bin("levee");
    for (i, certs) in dirs.iter().enumerate() {
        let out = std::process::Command::new(&levee)
            .args(["cert", "rotate", "--lifetime", "2y"])
            .args(["--certs-dir", certs.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        // The node picks the new pair up by itself: its expiry jumps a year.
        let node = &nodes[i];
        wait_for(
            "the rotated certificate in use",
            Duration::from_secs(30),
            || {
                expiry(node)
                    .filter(|e| *e > before[i] + 300.0 * 86_400.0)
                    .map(|_| ())
            },
        );
        assert!(node.log().contains("certificate files changed"));
    }
    // Load goes on past the last rotation, on new connections.
    let after_rotation = ok.load(Ordering::Relaxed);
    wait_for(
        "requests after the rotations",
        Duration::from_secs(30),
        || (ok.load(Ordering::Relaxed) > after_rotation + 200).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    for worker in load {
        worker.join().unwrap();
    }
    let failed = failed.load(Ordering::Relaxed);
    assert_eq!(
        failed,
        0,
        "failed requests during rotation ({} ok): {:?}",
        ok.load(Ordering::Relaxed),
        errors.lock().unwrap().iter().take(5).collect::<Vec<_>>()
    );
    for mut node in nodes {
        assert!(node.is_running(), "no node restarted or died");
    }
}

#[test]
fn a_certificate_near_its_end_shows_in_status_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let hosts: Vec<String> = (1..=254).map(|i| format!("127.0.0.{i}")).collect();
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let certs = own_ca(
        &dir.path().join("certs"),
        &hosts,
        Validity::for_lifetime(Duration::from_secs(10 * 86_400)),
    );
    let node = TestNode::start(dir.path(), &["--certs-dir", certs.to_str().unwrap()]);
    let status = wait_for(
        "status naming the certificate",
        Duration::from_secs(30),
        || {
            let out = node.cli(&["status"], None);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains("CERT_EXPIRING").then_some(text)
        },
    );
    assert!(status.contains("levee cert rotate"), "{status}");
    assert!(
        status.contains("health: HEALTH_WARN") && status.contains("CERT_EXPIRING"),
        "{status}"
    );
    let left = metric(
        &node.admin_get("/metrics").unwrap().body,
        "levee_cert_expiry_timestamp_seconds",
    );
    assert!(left.is_some());
}
