use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::issue::{self, Validity};
use super::*;

const YEAR: Duration = Duration::from_secs(365 * 86_400);

fn ca_key(dir: &Path) -> PathBuf {
    dir.join(issue::CA_KEY)
}

/// A CA, a node pair for 127.0.0.1 and localhost, a client pair "alice".
fn cluster_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    issue::create_ca(d, &ca_key(d), Validity::for_lifetime(YEAR), false).unwrap();
    let hosts = ["127.0.0.1".to_owned(), "localhost".to_owned()];
    issue::create_node(d, &ca_key(d), &hosts, Validity::for_lifetime(YEAR)).unwrap();
    issue::create_client(d, &ca_key(d), "alice", Validity::for_lifetime(YEAR)).unwrap();
    dir
}

#[test]
fn issued_certificates_carry_their_role_hosts_and_validity() {
    let dir = cluster_dir();
    let d = dir.path();
    let listed: Vec<CertInfo> = issue::list(d)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let names: Vec<String> = listed
        .iter()
        .map(|c| c.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["ca.crt", "client.alice.crt", "node.crt"]);
    assert!(listed[0].is_ca && listed[0].role.is_none());
    assert_eq!(listed[1].role, Some(Role::Client));
    assert_eq!(listed[1].common_name, "alice");
    assert_eq!(listed[2].role, Some(Role::Node));
    assert_eq!(listed[2].hosts, ["127.0.0.1", "localhost"]);
    let left = listed[2]
        .not_after
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(left > YEAR - Duration::from_secs(60) && left <= YEAR);
    for key in ["ca.key", "node.key", "client.alice.key"] {
        let mode = std::fs::metadata(d.join(key)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
}

#[test]
fn an_existing_ca_is_kept_unless_overwritten() {
    let dir = cluster_dir();
    let d = dir.path();
    let err = issue::create_ca(d, &ca_key(d), Validity::for_lifetime(YEAR), false).unwrap_err();
    assert!(matches!(err, TlsError::Exists { .. }), "{err}");
    issue::create_ca(d, &ca_key(d), Validity::for_lifetime(YEAR), true).unwrap();
}

#[test]
fn bad_client_names_and_hostless_nodes_are_refused() {
    let dir = cluster_dir();
    let d = dir.path();
    for name in ["", "node", "a/b", "x y"] {
        let v = Validity::for_lifetime(YEAR);
        assert!(
            issue::create_client(d, &ca_key(d), name, v).is_err(),
            "{name:?}"
        );
    }
    let v = Validity::for_lifetime(YEAR);
    assert!(issue::create_node(d, &ca_key(d), &[], v).is_err());
}

#[test]
fn credentials_load_with_the_role_their_files_say() {
    let dir = cluster_dir();
    let node = Credentials::node(dir.path()).unwrap();
    assert_eq!(node.role(), Some(Role::Node));
    let client = Credentials::client(dir.path(), "alice").unwrap();
    assert_eq!(client.role(), Some(Role::Client));
    // A client pair in the node's place is refused by role.
    std::fs::copy(
        dir.path().join("client.alice.crt"),
        dir.path().join("node.crt"),
    )
    .unwrap();
    std::fs::copy(
        dir.path().join("client.alice.key"),
        dir.path().join("node.key"),
    )
    .unwrap();
    let err = Credentials::node(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("node.crt") && err.contains("not a node certificate"),
        "{err}"
    );
}

#[test]
fn an_expired_certificate_is_refused_naming_the_file_and_the_time() {
    let dir = cluster_dir();
    let d = dir.path();
    let now = SystemTime::now();
    let past = Validity {
        not_before: now - 2 * YEAR,
        not_after: now - YEAR,
    };
    issue::create_client(d, &ca_key(d), "old", past).unwrap();
    let err = Credentials::client(d, "old").unwrap_err();
    let TlsError::Expired { path, not_after } = &err else {
        panic!("{err}");
    };
    assert!(path.ends_with("client.old.crt"));
    let text = err.to_string();
    assert!(text.contains("client.old.crt"), "{text}");
    assert!(
        text.contains(&humantime::format_rfc3339_seconds(*not_after).to_string()),
        "{text}"
    );
}

#[test]
fn a_mismatched_or_broken_pair_is_not_loaded_and_the_old_one_stays() {
    let dir = cluster_dir();
    let d = dir.path();
    let node = Credentials::node(d).unwrap();
    let before = node.not_after();
    // The key of another pair: what a renewal looks like half way.
    std::fs::copy(d.join("client.alice.key"), d.join("node.key")).unwrap();
    let err = node.reload().unwrap_err().to_string();
    assert!(err.contains("does not belong to"), "{err}");
    assert_eq!(node.not_after(), before);
    std::fs::write(d.join("node.crt"), "garbage").unwrap();
    assert!(node.reload().is_err());
    assert_eq!(node.role(), Some(Role::Node));
}

#[test]
fn a_rotated_pair_is_picked_up_on_reload() {
    let dir = cluster_dir();
    let d = dir.path();
    let node = Credentials::node(d).unwrap();
    assert!(!node.reload().unwrap(), "nothing changed yet");
    let before = node.not_after();
    let longer = Validity::for_lifetime(2 * YEAR);
    let rotated = issue::rotate_node(d, &ca_key(d), longer).unwrap();
    assert_eq!(rotated.hosts, ["127.0.0.1", "localhost"]);
    assert!(node.reload().unwrap());
    assert!(node.not_after() > before);
}

#[test]
fn server_names_come_from_the_host_part_of_an_address() {
    assert_eq!(
        format!("{:?}", server_name("127.0.0.3:7000").unwrap()),
        format!("{:?}", server_name("127.0.0.3").unwrap())
    );
    assert!(server_name("node1:7000").is_ok());
    assert!(server_name("[::1]:7000").is_ok());
    assert!(server_name("bad host:1").is_err());
}

/// Runs a TLS handshake over an in-memory pipe; the server's view of the
/// client, or the first side's error.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    host: &str,
) -> Result<Option<PeerIdentity>, String> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let connector = tokio_rustls::TlsConnector::from(client);
    let name = server_name(host).unwrap();
    let serve = async move {
        let mut s = acceptor.accept(a).await.map_err(|e| e.to_string())?;
        let who = peer_identity(s.get_ref().1.peer_certificates());
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        s.write_all(&byte).await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(who)
    };
    let call = async move {
        let mut c = connector
            .connect(name, b)
            .await
            .map_err(|e| e.to_string())?;
        c.write_all(b"x").await.map_err(|e| e.to_string())?;
        c.flush().await.map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        c.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    let (served, called) = tokio::join!(serve, call);
    called?;
    served
}

#[tokio::test]
async fn a_client_is_known_by_its_certificate() {
    let dir = cluster_dir();
    let node = Credentials::node(dir.path()).unwrap();
    let alice = Credentials::client(dir.path(), "alice").unwrap();
    let who = handshake(node.server_config(), alice.client_config(), "127.0.0.1:1")
        .await
        .unwrap();
    assert_eq!(
        who,
        Some(PeerIdentity {
            role: Role::Client,
            name: "alice".into(),
            hosts: vec![],
        })
    );
    let who = handshake(node.server_config(), node.client_config(), "localhost:1")
        .await
        .unwrap();
    assert_eq!(who.map(|w| w.role), Some(Role::Node));
}

#[tokio::test]
async fn another_cas_certificate_is_refused_both_ways() {
    let ours = cluster_dir();
    let theirs = cluster_dir();
    let node = Credentials::node(ours.path()).unwrap();
    let stranger = Credentials::client(theirs.path(), "alice").unwrap();
    let err = handshake(
        node.server_config(),
        stranger.client_config(),
        "127.0.0.1:1",
    )
    .await
    .unwrap_err();
    assert!(!err.is_empty());
    let their_node = Credentials::node(theirs.path()).unwrap();
    let alice = Credentials::client(ours.path(), "alice").unwrap();
    let err = handshake(
        their_node.server_config(),
        alice.client_config(),
        "127.0.0.1:1",
    )
    .await
    .unwrap_err();
    // Every CA is named "levee CA": the name matches, the signature cannot.
    assert!(
        err.contains("BadSignature") || err.contains("UnknownIssuer"),
        "{err}"
    );
}

#[tokio::test]
async fn a_node_reached_by_a_name_its_certificate_lacks_is_refused() {
    let dir = cluster_dir();
    let node = Credentials::node(dir.path()).unwrap();
    let alice = Credentials::client(dir.path(), "alice").unwrap();
    let err = handshake(node.server_config(), alice.client_config(), "127.0.0.9:1")
        .await
        .unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");
}

#[tokio::test]
async fn the_admin_port_accepts_a_peer_without_a_certificate() {
    let dir = cluster_dir();
    let node = Credentials::node(dir.path()).unwrap();
    let roots = {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(dir.path().join("ca.crt")).unwrap();
        use rustls::pki_types::pem::PemObject;
        for der in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(der.unwrap()).unwrap();
        }
        roots
    };
    let anonymous = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let anonymous = Arc::new(anonymous);
    let who = handshake(node.admin_config(), anonymous.clone(), "127.0.0.1:1")
        .await
        .unwrap();
    assert_eq!(who, None);
    // The protocol port requires one.
    assert!(
        handshake(node.server_config(), anonymous, "127.0.0.1:1")
            .await
            .is_err()
    );
}

#[test]
fn expiry_is_fine_then_soon_then_over() {
    let t0 = SystemTime::UNIX_EPOCH + YEAR;
    let window = Duration::from_secs(30 * 86_400);
    assert_eq!(Expiry::of(t0, t0 - 2 * window, window), Expiry::Fine);
    assert_eq!(Expiry::of(t0, t0 - window, window), Expiry::Soon(window));
    assert_eq!(Expiry::of(t0, t0, window), Expiry::Expired);
    assert_eq!(Expiry::of(t0, t0 + window, window), Expiry::Expired);
}
