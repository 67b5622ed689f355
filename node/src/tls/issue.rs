//! Issuing a cluster's certificates (what `levee cert` runs): the CA, a
//! node's pair, a client's pair, a node's pair re-issued in place.
//!
//! Files are written whole or not at all (a temporary file renamed over
//! the old one), keys readable by their owner only (0600), so a running
//! node watching its directory never reads half a file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use super::load::{self, CertInfo};
use super::{Role, TlsError};

/// The CA's certificate, in every certificates directory.
pub const CA_CERT: &str = "ca.crt";
/// The CA's key: only where certificates are issued.
pub const CA_KEY: &str = "ca.key";
/// A node's certificate.
pub const NODE_CERT: &str = "node.crt";
/// A node's key.
pub const NODE_KEY: &str = "node.key";

/// A client's certificate and key file names.
pub fn client_files(name: &str) -> (String, String) {
    (format!("client.{name}.crt"), format!("client.{name}.key"))
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Start.
    pub not_before: SystemTime,
    /// End.
    pub not_after: SystemTime,
}

/// An hour of slack at the start, for clocks slightly behind the issuer's.
const BACKDATE: Duration = Duration::from_secs(3600);

impl Validity {
    /// From an hour ago (clock skew) to `lifetime` from now.
    pub fn for_lifetime(lifetime: Duration) -> Self {
        let now = SystemTime::now();
        Self {
            not_before: now.checked_sub(BACKDATE).unwrap_or(now),
            not_after: now + lifetime,
        }
    }
}

/// Default lifetimes, as `cockroach cert` has them: the CA for 10 years,
/// a node or client for 5, renewed by `rotate` long before.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Default lifetime of node and client certificates.
pub const CERT_LIFETIME: Duration = Duration::from_secs(5 * 365 * 86_400);

fn issue_error(e: impl std::fmt::Display) -> TlsError {
    TlsError::Issue(e.to_string())
}

fn offset(t: SystemTime) -> Result<time::OffsetDateTime, TlsError> {
    // X.509 times carry whole seconds.
    time::OffsetDateTime::from(t)
        .replace_nanosecond(0)
        .map_err(issue_error)
}

/// Creates the CA: `DIR/ca.crt` and the key at `ca_key`. An existing CA is
/// kept unless `overwrite`, since replacing it orphans every certificate
/// it signed.
pub fn create_ca(
    dir: &Path,
    ca_key: &Path,
    validity: Validity,
    overwrite: bool,
) -> Result<CertInfo, TlsError> {
    let cert_path = dir.join(CA_CERT);
    if !overwrite {
        for path in [&cert_path, &ca_key.to_path_buf()] {
            if path.exists() {
                return Err(TlsError::Exists { path: path.clone() });
            }
        }
    }
    let key = KeyPair::generate().map_err(issue_error)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "levee CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "levee");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = offset(validity.not_before)?;
    params.not_after = offset(validity.not_after)?;
    let cert = params.self_signed(&key).map_err(issue_error)?;
    create_dir(dir)?;
    if let Some(parent) = ca_key.parent() {
        create_dir(parent)?;
    }
    write_atomic(ca_key, key.serialize_pem().as_bytes(), true)?;
    write_atomic(&cert_path, cert.pem().as_bytes(), false)?;
    load::describe(&cert_path)
}

/// Issues a node's pair, valid for `hosts` (names and addresses the node
/// is reached at), into `DIR/node.crt` and `DIR/node.key`.
pub fn create_node(
    dir: &Path,
    ca_key: &Path,
    hosts: &[String],
    validity: Validity,
) -> Result<CertInfo, TlsError> {
    if hosts.is_empty() {
        return Err(TlsError::Issue(
            "a node certificate needs at least one --host or --ip (the names clients use to reach it)"
                .into(),
        ));
    }
    issue(
        dir,
        ca_key,
        Role::Node,
        "node",
        hosts,
        validity,
        (NODE_CERT.into(), NODE_KEY.into()),
    )
}

/// Issues a client's pair into `DIR/client.NAME.crt` and `.key`.
pub fn create_client(
    dir: &Path,
    ca_key: &Path,
    name: &str,
    validity: Validity,
) -> Result<CertInfo, TlsError> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid || name == "node" {
        return Err(TlsError::Issue(format!(
            "client name {name:?}: use letters, digits, '-' and '_' (and not \"node\")"
        )));
    }
    issue(
        dir,
        ca_key,
        Role::Client,
        name,
        &[],
        validity,
        client_files(name),
    )
}

/// A whole small cluster's certificates in one directory: the CA (its key
/// beside it, replaced if there), one node pair valid for `hosts`, and the
/// client "root". What test runs, benchmark runs and the fuzz seeds use;
/// an operator runs the three `levee cert` commands instead.
pub fn create_cluster(dir: &Path, hosts: &[String], validity: Validity) -> Result<(), TlsError> {
    let ca_key = dir.join(CA_KEY);
    create_ca(dir, &ca_key, validity, true)?;
    create_node(dir, &ca_key, hosts, validity)?;
    create_client(dir, &ca_key, "root", validity)?;
    Ok(())
}

/// Re-issues the node pair in `DIR` in place, for the same hosts, with a
/// new key. A node watching the directory picks it up without a restart.
pub fn rotate_node(dir: &Path, ca_key: &Path, validity: Validity) -> Result<CertInfo, TlsError> {
    let old = load::describe(&dir.join(NODE_CERT))?;
    create_node(dir, ca_key, &old.hosts, validity)
}

fn issue(
    dir: &Path,
    ca_key_path: &Path,
    role: Role,
    common_name: &str,
    hosts: &[String],
    validity: Validity,
    (cert_file, key_file): (String, String),
) -> Result<CertInfo, TlsError> {
    let ca_cert_path = dir.join(CA_CERT);
    let ca_pem = read_text(&ca_cert_path)?;
    let ca_key_pem = read_text(ca_key_path)?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| TlsError::Invalid {
        path: ca_key_path.to_owned(),
        detail: format!("not a CA key: {e}"),
    })?;
    let ca_params =
        CertificateParams::from_ca_cert_pem(&ca_pem).map_err(|e| TlsError::Invalid {
            path: ca_cert_path.clone(),
            detail: format!("not a CA certificate: {e}"),
        })?;
    // rcgen signs with an issuer certificate object; re-creating it from
    // the CA's own parameters and key keeps its name and key identifier.
    let ca = ca_params.self_signed(&ca_key).map_err(issue_error)?;
    let key = KeyPair::generate().map_err(issue_error)?;
    let mut params = CertificateParams::new(hosts.to_vec()).map_err(issue_error)?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, role.unit());
    params
        .distinguished_name
        .push(DnType::OrganizationName, "levee");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match role {
        // A node serves and also calls other nodes.
        Role::Node => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    params.not_before = offset(validity.not_before)?;
    params.not_after = offset(validity.not_after)?;
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(issue_error)?;
    let cert_path = dir.join(cert_file);
    // Key first: until the certificate lands the two do not match, and a
    // watching node keeps its old pair (see `load::Loaded::from_pem`).
    write_atomic(&dir.join(key_file), key.serialize_pem().as_bytes(), true)?;
    write_atomic(&cert_path, cert.pem().as_bytes(), false)?;
    load::describe(&cert_path)
}

/// Every certificate in a directory (`*.crt`), sorted by file name.
pub fn list(dir: &Path) -> Result<Vec<Result<CertInfo, TlsError>>, TlsError> {
    let entries = std::fs::read_dir(dir).map_err(|error| TlsError::Read {
        path: dir.to_owned(),
        error,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    paths.sort();
    Ok(paths.iter().map(|p| load::describe(p)).collect())
}

fn read_text(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

fn create_dir(dir: &Path) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(|error| TlsError::Write {
        path: dir.to_owned(),
        error,
    })
}

/// Writes a file whole: a temporary file beside it, synced, renamed over.
fn write_atomic(path: &Path, contents: &[u8], secret: bool) -> Result<(), TlsError> {
    let error = |error| TlsError::Write {
        path: path.to_owned(),
        error,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(&tmp).map_err(error)?;
    // An existing temporary file keeps its old mode; set it explicitly.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if secret { 0o600 } else { 0o644 };
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(error)?;
    }
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(error)
}
