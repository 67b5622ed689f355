//! The two systems behind one `put`: levee through its own client library
//! (`levee_node::client`), etcd through `etcd-client` (tonic gRPC, the
//! v3 API's `Put`). Everything else about the load is shared, so the two
//! differ only in what happens between sending a put and its answer.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use levee_node::client::{Client, ClientConfig};
use levee_node::tls::Transport;

/// Time a put may take before it counts as an error, for both systems:
/// levee's client default (`ClientConfig::request_timeout`). A durable
/// put takes milliseconds; one that takes seconds is a failure either way.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Time to open a connection, for both systems: levee's client default.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Which system the load goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// levee nodes, plaintext (`--insecure`), their protocol ports.
    Levee,
    /// etcd members, plaintext, their client URLs.
    Etcd,
}

impl System {
    /// Lower-case name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Levee => "levee",
            Self::Etcd => "etcd",
        }
    }
}

/// One client instance; workers share instances round-robin.
#[derive(Clone)]
pub enum Putter {
    /// levee's client: a connection to every node, each put routed to a
    /// replica of its key, which coordinates the quorum write.
    Levee(Arc<Client>),
    /// etcd's client: a gRPC channel balanced over every member; a
    /// follower forwards the put to the leader. Boxed: the gRPC client is
    /// some 400 bytes, levee's an `Arc`.
    Etcd(Box<etcd_client::KvClient>),
}

impl Putter {
    /// Writes `value` under `key`; `Err` carries the client's message.
    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        match self {
            Self::Levee(client) => client
                .put(key, value)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Self::Etcd(kv) => kv
                .put(key, value, None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }
}

/// `connections` client instances of `system`, each with every endpoint
/// (each its own connections), as a service with many application
/// processes would have.
pub async fn connect(
    system: System,
    endpoints: &[String],
    connections: usize,
) -> anyhow::Result<Vec<Putter>> {
    let mut putters = Vec::with_capacity(connections);
    for i in 0..connections {
        // Each instance starts at another endpoint, so the first requests
        // (levee's map fetch) do not all land on the first one.
        let mut endpoints = endpoints.to_vec();
        let len = endpoints.len().max(1);
        endpoints.rotate_left(i % len);
        putters.push(match system {
            System::Levee => Putter::Levee(Arc::new(Client::new(ClientConfig {
                endpoints,
                transport: Transport::Plain,
                connect_timeout: CONNECT_TIMEOUT,
                request_timeout: REQUEST_TIMEOUT,
                ..ClientConfig::default()
            }))),
            System::Etcd => {
                let options = etcd_client::ConnectOptions::default()
                    .with_timeout(REQUEST_TIMEOUT)
                    .with_connect_timeout(CONNECT_TIMEOUT);
                let client = etcd_client::Client::connect(&endpoints, Some(options))
                    .await
                    .with_context(|| {
                        format!("cannot connect to etcd at {}", endpoints.join(","))
                    })?;
                Putter::Etcd(Box::new(client.kv_client()))
            }
        });
    }
    Ok(putters)
}
