//! The test run's certificates: one CA per test process, a node pair valid
//! for every 127.0.0.x the harness uses (and localhost), and the client
//! "root". Every node the harness starts uses them, so the whole suite
//! runs with mutual TLS on, as a real cluster does.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use levee_node::client::ClientConfig;
use levee_node::tls::issue::{self, Validity};
use levee_node::tls::{Credentials, Transport};

/// The directory holding ca.crt, ca.key, node.crt/.key and
/// client.root.crt/.key; made once per test process.
pub fn certs_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Kept for the process: nodes read it until they stop.
        let dir = tempfile::Builder::new()
            .prefix("levee-test-certs-")
            .tempdir()
            .expect("certificates directory")
            .keep();
        issue_into(&dir);
        dir
    })
}

/// Issues a CA, the node pair and the client "root" into `dir`.
pub fn issue_into(dir: &Path) {
    let year = Validity::for_lifetime(Duration::from_secs(365 * 86_400));
    let mut hosts: Vec<String> = (1..=254).map(|i| format!("127.0.0.{i}")).collect();
    hosts.push("localhost".into());
    issue::create_cluster(dir, &hosts, year).expect("create the test run's certificates");
}

/// The client "root": what tests connect as.
pub fn client_transport() -> Transport {
    static T: OnceLock<Transport> = OnceLock::new();
    T.get_or_init(|| {
        Transport::Tls(Credentials::client(certs_dir(), "root").expect("client credentials"))
    })
    .clone()
}

/// A node's pair: for tests that speak to a node as another node would.
pub fn node_transport() -> Transport {
    static T: OnceLock<Transport> = OnceLock::new();
    T.get_or_init(|| Transport::Tls(Credentials::node(certs_dir()).expect("node credentials")))
        .clone()
}

/// Client defaults with the test run's client certificate.
pub fn client_config() -> ClientConfig {
    ClientConfig {
        transport: client_transport(),
        ..ClientConfig::default()
    }
}
