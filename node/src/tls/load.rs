//! Reading certificate and key files and building rustls configurations
//! from them. Everything read from disk is checked: a file that does not
//! parse, a key that does not belong to its certificate, or a certificate
//! that has expired is an error naming the file, never a panic.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Role, TlsError, provider};

/// What a certificate says about itself.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// The file it was read from.
    pub path: PathBuf,
    /// The subject, as `CN=…, OU=…`.
    pub subject: String,
    /// The common name.
    pub common_name: String,
    /// The levee role, if the certificate carries one (a CA has none).
    pub role: Option<Role>,
    /// Whether it is a CA.
    pub is_ca: bool,
    /// Host names and addresses it is valid for.
    pub hosts: Vec<String>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// The raw public key, to match the certificate against its key.
    pub(super) public_key: Vec<u8>,
}

/// Parses one DER certificate.
pub(super) fn parse_cert(der: &[u8]) -> Result<CertInfo, String> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the certificate", rest.len()));
    }
    let subject = cert.subject();
    let text = |attrs: Vec<&x509_parser::x509::AttributeTypeAndValue<'_>>| {
        attrs
            .first()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let common_name = text(subject.iter_common_name().collect());
    let unit = text(subject.iter_organizational_unit().collect());
    let mut hosts = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => hosts.push((*d).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(ip) => {
                    if let Some(ip) = ip_of(ip) {
                        hosts.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    let time = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
        } else {
            SystemTime::UNIX_EPOCH
        }
    };
    Ok(CertInfo {
        path: PathBuf::new(),
        subject: subject.to_string(),
        common_name,
        role: Role::from_unit(&unit),
        is_ca: cert.is_ca(),
        hosts,
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
        public_key: cert.public_key().subject_public_key.data.to_vec(),
    })
}

fn ip_of(raw: &[u8]) -> Option<std::net::IpAddr> {
    match raw.len() {
        4 => <[u8; 4]>::try_from(raw).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(raw).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

fn invalid(path: &Path, detail: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        path: path.to_owned(),
        detail: detail.into(),
    }
}

/// The certificates in a PEM file, first one described.
fn read_chain(path: &Path) -> Result<(Vec<CertificateDer<'static>>, CertInfo), TlsError> {
    chain_of(&read(path)?, path)
}

/// The certificates of a PEM file's bytes, the first described; `path`
/// only names the file in errors.
fn chain_of(pem: &[u8], path: &Path) -> Result<(Vec<CertificateDer<'static>>, CertInfo), TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, format!("not a PEM certificate: {e}")))?;
    let first = chain
        .first()
        .ok_or_else(|| invalid(path, "holds no certificate"))?;
    let mut info = parse_cert(first.as_ref()).map_err(|e| invalid(path, e))?;
    info.path = path.to_owned();
    Ok((chain, info))
}

/// Describes every certificate in a file (for `levee cert list`).
pub fn describe(path: &Path) -> Result<CertInfo, TlsError> {
    read_chain(path).map(|(_, info)| info)
}

/// The three files of a holder.
#[derive(Debug, Clone)]
pub struct PairFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The role the pair must carry.
    pub role: Role,
}

impl PairFiles {
    pub fn node(dir: &Path) -> Self {
        Self {
            ca: dir.join(super::issue::CA_CERT),
            cert: dir.join(super::issue::NODE_CERT),
            key: dir.join(super::issue::NODE_KEY),
            role: Role::Node,
        }
    }

    pub fn client(dir: &Path, name: &str) -> Self {
        let (cert, key) = super::issue::client_files(name);
        Self {
            ca: dir.join(super::issue::CA_CERT),
            cert: dir.join(cert),
            key: dir.join(key),
            role: Role::Client,
        }
    }

    /// The three files' bytes, read once: what is hashed to tell a
    /// change and what a new pair is built from, so both see the same
    /// files.
    pub fn read(&self) -> Result<PairPem, TlsError> {
        Ok(PairPem {
            ca: read(&self.ca)?,
            cert: read(&self.cert)?,
            key: read(&self.key)?,
        })
    }
}

/// The bytes of a holder's three files.
pub struct PairPem {
    /// The CA's certificate file.
    pub ca: Vec<u8>,
    /// The holder's certificate file.
    pub cert: Vec<u8>,
    /// The holder's key file.
    pub key: Vec<u8>,
}

impl PairPem {
    /// A hash of the three files' contents: what tells a change.
    pub fn fingerprint(&self) -> u64 {
        let mut all = Vec::new();
        for bytes in [&self.ca, &self.cert, &self.key] {
            all.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            all.extend_from_slice(bytes);
        }
        xxhash_rust::xxh3::xxh3_64(&all)
    }
}

/// A pair and the CA, checked, with the configurations built from them.
pub struct Loaded {
    pub fingerprint: u64,
    pub own: CertInfo,
    pub ca: CertInfo,
    pub server: Arc<rustls::ServerConfig>,
    pub admin: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
    pub anonymous: Arc<rustls::ClientConfig>,
}

impl Loaded {
    /// Checks the three files' bytes and builds the configurations (what
    /// loading, reloading and the `cert` fuzz target run); `files` names
    /// the files in errors.
    pub fn from_pem(files: &PairFiles, pems: &PairPem, now: SystemTime) -> Result<Self, TlsError> {
        let fingerprint = pems.fingerprint();
        let (ca_chain, ca) = chain_of(&pems.ca, &files.ca)?;
        if !ca.is_ca {
            return Err(invalid(&files.ca, "is not a CA certificate"));
        }
        let (chain, own) = chain_of(&pems.cert, &files.cert)?;
        if own.role != Some(files.role) {
            return Err(invalid(
                &files.cert,
                format!(
                    "is not a {} certificate (its subject is {}); create one with `levee cert create-{}`",
                    files.role.name(),
                    own.subject,
                    files.role.name()
                ),
            ));
        }
        for info in [&ca, &own] {
            if info.not_after <= now {
                return Err(TlsError::Expired {
                    path: info.path.clone(),
                    not_after: info.not_after,
                });
            }
        }
        let key_pem = &pems.key;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| invalid(&files.key, format!("not a PEM private key: {e}")))?;
        // A renewal writes the key and the certificate one after the
        // other; in between they do not match, and loading that would
        // fail every handshake until the second file lands.
        let key_pem_text = String::from_utf8_lossy(key_pem);
        let public = rcgen::KeyPair::from_pem(&key_pem_text)
            .map_err(|e| invalid(&files.key, format!("unsupported private key: {e}")))?;
        if public.public_key_raw() != own.public_key.as_slice() {
            return Err(invalid(
                &files.key,
                format!("does not belong to {}", files.cert.display()),
            ));
        }
        let mut roots = RootCertStore::empty();
        for der in ca_chain {
            roots
                .add(der)
                .map_err(|e| invalid(&files.ca, format!("unusable CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let config_error = |e: rustls::Error| invalid(&files.cert, e.to_string());
        let verifier = |optional: bool| {
            let builder = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
            let builder = if optional {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder
                .build()
                .map_err(|e| invalid(&files.ca, e.to_string()))
        };
        let server_with = |optional: bool| -> Result<Arc<rustls::ServerConfig>, TlsError> {
            let config = rustls::ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(config_error)?
                .with_client_cert_verifier(verifier(optional)?)
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(config_error)?;
            Ok(Arc::new(config))
        };
        let server = server_with(false)?;
        let mut admin = (*server_with(true)?).clone();
        admin.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client_builder = || {
            rustls::ClientConfig::builder_with_provider(provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(config_error)
        };
        let anonymous = client_builder()?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        let client = client_builder()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(config_error)?;
        Ok(Self {
            fingerprint,
            own,
            ca,
            server,
            admin: Arc::new(admin),
            client: Arc::new(client),
            anonymous: Arc::new(anonymous),
        })
    }
}
