//! Mutual TLS: the certificates of a cluster, who a peer is, and the
//! rustls configurations every connection is made with.
//!
//! A cluster has one CA. A node holds `node.crt`/`node.key` (role `node`,
//! host names and addresses as subject alternative names, good for
//! serving and for calling other nodes); a client holds
//! `client.NAME.crt`/`.key` (role `client`, good only for calling). The
//! role is the certificate's organisational unit, so a peer's identity
//! always comes from the certificate it proved it holds, never from what
//! it writes in a message.
//!
//! Certificates renew without a restart: [`Credentials`] re-reads its
//! files when they change on disk (checked at most once a second, when a
//! connection is made or the node's watcher asks) and new connections use
//! the new pair; a pair that does not load (half written, key and
//! certificate not matching, expired) is refused and the old one kept, so
//! a botched renewal never locks anyone out.

pub mod issue;
mod load;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::CertificateDer;

pub use load::{CertInfo, describe};

/// What a certificate allows its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A cluster member: node-to-node messages and everything a client may do.
    Node,
    /// A client: client operations only.
    Client,
}

impl Role {
    /// The organisational unit that marks the role in a certificate.
    pub fn unit(self) -> &'static str {
        match self {
            Role::Node => "levee-node",
            Role::Client => "levee-client",
        }
    }

    fn from_unit(unit: &str) -> Option<Self> {
        match unit {
            "levee-node" => Some(Role::Node),
            "levee-client" => Some(Role::Client),
            _ => None,
        }
    }

    /// The role's name as `levee cert list` and the metrics show it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Client => "client",
        }
    }
}

/// Who is on the other end of a connection, as its certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// What the certificate allows.
    pub role: Role,
    /// The certificate's common name (`node`, or the client's name).
    pub name: String,
    /// The host names and addresses the certificate is valid for.
    pub hosts: Vec<String>,
}

/// The identity in a verified peer's certificate chain (its first, the
/// end entity), or `None` when it has none or no levee role: such a peer
/// gets nothing but liveness.
pub fn peer_identity(chain: Option<&[CertificateDer<'_>]>) -> Option<PeerIdentity> {
    let leaf = chain?.first()?;
    let info = load::parse_cert(leaf.as_ref()).ok()?;
    Some(PeerIdentity {
        role: info.role?,
        name: info.common_name,
        hosts: info.hosts,
    })
}

/// A TLS failure: every message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}: {error}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A file's contents are not what they should be.
    #[error("{}: {detail}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A certificate whose validity has ended.
    #[error(
        "certificate {} expired at {}; issue a new one (`levee cert rotate` for a node, `levee cert create-client` for a client)",
        path.display(),
        humantime::format_rfc3339_seconds(*not_after)
    )]
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// When it expired.
        not_after: SystemTime,
    },
    /// A file that would be overwritten.
    #[error("{} already exists; pass --overwrite to replace it", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Certificate generation failed.
    #[error("cannot issue a certificate: {0}")]
    Issue(String),
}

/// How a connection is made: plaintext (only behind an explicit
/// `--insecure`) or mutual TLS with these credentials.
#[derive(Debug, Clone, Default)]
pub enum Transport {
    /// Plaintext: anyone who can reach the port may do anything.
    #[default]
    Plain,
    /// Mutual TLS.
    Tls(Arc<Credentials>),
}

impl Transport {
    /// Whether connections are encrypted and authenticated.
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// For the admin port: HTTPS with this pair's certificate, or `None`
    /// for plain HTTP.
    pub fn admin_tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        match self {
            Transport::Plain => None,
            Transport::Tls(credentials) => Some(credentials.client_config()),
        }
    }
}

/// How often certificate files are looked at for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The files of one holder's pair (a node's or a client's) and the CA,
/// and the configurations built from them, rebuilt when the files change.
pub struct Credentials {
    files: load::PairFiles,
    state: Mutex<State>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("cert", &self.files.cert)
            .finish_non_exhaustive()
    }
}

struct State {
    loaded: Arc<load::Loaded>,
    checked: Instant,
    /// The last reload error, reported once rather than every second.
    last_error: Option<String>,
}

impl Credentials {
    /// A node's credentials: `DIR/ca.crt`, `DIR/node.crt`, `DIR/node.key`.
    pub fn node(dir: &Path) -> Result<Arc<Self>, TlsError> {
        Self::open(load::PairFiles::node(dir), SystemTime::now())
    }

    /// A client's credentials: `DIR/ca.crt`, `DIR/client.NAME.crt`,
    /// `DIR/client.NAME.key`.
    pub fn client(dir: &Path, name: &str) -> Result<Arc<Self>, TlsError> {
        Self::open(load::PairFiles::client(dir, name), SystemTime::now())
    }

    fn open(files: load::PairFiles, now: SystemTime) -> Result<Arc<Self>, TlsError> {
        let loaded = load::Loaded::from_pem(&files, &files.read()?, now)?;
        Ok(Arc::new(Self {
            files,
            state: Mutex::new(State {
                loaded: Arc::new(loaded),
                checked: Instant::now(),
                last_error: None,
            }),
        }))
    }

    /// The certificate file these credentials present.
    pub fn cert_path(&self) -> &Path {
        &self.files.cert
    }

    /// The role of the pair held.
    pub fn role(&self) -> Option<Role> {
        self.current().own.role
    }

    /// When the certificate presented expires.
    pub fn not_after(&self) -> SystemTime {
        self.current().own.not_after
    }

    /// When the CA's certificate expires.
    pub fn ca_not_after(&self) -> SystemTime {
        self.current().ca.not_after
    }

    /// The configuration a node's protocol port serves with: a client
    /// certificate from the cluster's CA is required.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.current().server.clone()
    }

    /// The configuration the admin port serves with: a client
    /// certificate is asked for but not required, so orchestrators can
    /// probe health; everything else checks for one.
    pub fn admin_config(&self) -> Arc<rustls::ServerConfig> {
        self.current().admin.clone()
    }

    /// The configuration connections to nodes are made with.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.current().client.clone()
    }

    /// A configuration that trusts the cluster's CA but presents no
    /// certificate: what an orchestrator's health probe looks like.
    pub fn anonymous_config(&self) -> Arc<rustls::ClientConfig> {
        self.current().anonymous.clone()
    }

    /// Looks at the files now, whatever the time since the last look.
    /// `Ok(true)` when a new pair was loaded; an error leaves the pair in
    /// use as it was.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let mut state = lock(&self.state);
        self.reload_locked(&mut state, SystemTime::now())
    }

    fn reload_locked(&self, state: &mut State, now: SystemTime) -> Result<bool, TlsError> {
        state.checked = Instant::now();
        let pems = self.files.read()?;
        if pems.fingerprint() == state.loaded.fingerprint {
            return Ok(false);
        }
        let loaded = load::Loaded::from_pem(&self.files, &pems, now)?;
        tracing::info!(
            cert = %self.files.cert.display(),
            not_after = %humantime::format_rfc3339_seconds(loaded.own.not_after),
            "certificate files changed; new connections use the new pair"
        );
        state.loaded = Arc::new(loaded);
        state.last_error = None;
        Ok(true)
    }

    /// The loaded pair, looked at again if a check is due.
    fn current(&self) -> Arc<load::Loaded> {
        let mut state = lock(&self.state);
        if state.checked.elapsed() >= RELOAD_CHECK
            && let Err(e) = self.reload_locked(&mut state, SystemTime::now())
        {
            let message = e.to_string();
            if state.last_error.as_deref() != Some(message.as_str()) {
                tracing::warn!(error = %message, "certificate files not reloaded; the pair in use stays");
                state.last_error = Some(message);
            }
        }
        state.loaded.clone()
    }
}

/// How close a certificate is to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Further away than the warning window.
    Fine,
    /// Inside the window: this much is left.
    Soon(Duration),
    /// Already over: peers refuse it.
    Expired,
}

impl Expiry {
    /// Where `not_after` stands at `now`, warning `warn_before` ahead.
    pub fn of(not_after: SystemTime, now: SystemTime, warn_before: Duration) -> Self {
        match not_after.duration_since(now) {
            Err(_) => Expiry::Expired,
            Ok(Duration::ZERO) => Expiry::Expired,
            Ok(left) if left <= warn_before => Expiry::Soon(left),
            Ok(_) => Expiry::Fine,
        }
    }
}

/// How often the watcher repeats an expiry warning in the log.
const WARN_EVERY: Duration = Duration::from_secs(3600);

/// A node's certificate watcher: looks at the files every
/// [`RELOAD_CHECK`] (so a renewed pair is in use within a second or two,
/// even on an idle node), and warns in the log from `warn_before` ahead of
/// the node's or the CA's expiry, once an hour.
pub async fn watch(
    credentials: Arc<Credentials>,
    warn_before: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut last_warning: Option<Instant> = None;
    let mut ticks = tokio::time::interval(RELOAD_CHECK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // Reloads if due (logging a failed reload once), then looks at
        // the pair in use.
        let loaded = credentials.current();
        let now = SystemTime::now();
        let worst = [&loaded.own, &loaded.ca]
            .into_iter()
            .map(|c| {
                (
                    &c.path,
                    c.not_after,
                    Expiry::of(c.not_after, now, warn_before),
                )
            })
            .find(|(_, _, e)| *e != Expiry::Fine);
        let Some((path, at, expiry)) = worst else {
            last_warning = None;
            continue;
        };
        if last_warning.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            continue;
        }
        last_warning = Some(Instant::now());
        let at = humantime::format_rfc3339_seconds(at);
        match expiry {
            Expiry::Expired => tracing::error!(
                cert = %path.display(), %at,
                "certificate has expired: peers refuse this node; renew it (`levee cert rotate`), no restart needed"
            ),
            Expiry::Soon(left) => tracing::warn!(
                cert = %path.display(), %at,
                days_left = left.as_secs() / 86_400,
                "certificate expires soon; renew it (`levee cert rotate`), no restart needed"
            ),
            Expiry::Fine => {}
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks a holder's three files given as bytes (CA certificate, own
/// certificate, key), as a node does when it loads or reloads them: the
/// role and expiry of the pair, or why it is refused. The `cert` fuzz
/// target's way in.
pub fn check_pair(
    role: Role,
    ca: &[u8],
    cert: &[u8],
    key: &[u8],
    now: SystemTime,
) -> Result<(Option<Role>, SystemTime), TlsError> {
    let files = load::PairFiles {
        ca: PathBuf::from(issue::CA_CERT),
        cert: PathBuf::from("holder.crt"),
        key: PathBuf::from("holder.key"),
        role,
    };
    let pems = load::PairPem {
        ca: ca.to_vec(),
        cert: cert.to_vec(),
        key: key.to_vec(),
    };
    let loaded = load::Loaded::from_pem(&files, &pems, now)?;
    Ok((loaded.own.role, loaded.own.not_after))
}

/// The crypto provider: *ring*, which builds with the C compiler alone
/// (aws-lc-rs needs more of a toolchain than every machine here has).
/// rustls marks it deprecated for lacking post-quantum key exchange;
/// moving to aws-lc-rs is a one-line change here when the build allows.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The host part of `HOST:PORT` (`[v6]:PORT` without its brackets), or
/// the whole address when it has no port.
pub fn host_of(addr: &str) -> &str {
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => addr,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The rustls server name for a `HOST:PORT` address: an IP address or a
/// DNS name, checked against the node certificate's alternative names.
pub fn server_name(addr: &str) -> Result<rustls::pki_types::ServerName<'static>, String> {
    let host = host_of(addr);
    rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host:?} is not a host name or address: {e}"))
}

#[cfg(test)]
mod tests;
