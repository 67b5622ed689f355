//! `levee cert`: the cluster's certificates, as `cockroach cert` makes
//! them: a CA, a pair per node, a pair per client, listed and rotated.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use levee_node::tls::issue::{self, Validity};
use levee_node::tls::{CertInfo, Expiry};

use crate::Output;

/// The `levee cert` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Cert {
    /// Create the cluster's CA: CERTS_DIR/ca.crt and its key (--ca-key).
    CreateCa {
        /// Replace an existing CA (every certificate it signed stops working).
        #[arg(long)]
        overwrite: bool,
        /// Validity, e.g. 10y, 365d.
        #[arg(long, default_value = "10y", value_parser = humantime::parse_duration)]
        lifetime: Duration,
    },
    /// Create a node's pair (node.crt, node.key), valid for the names and
    /// addresses clients and other nodes reach it at.
    CreateNode {
        /// A host name the node is reached at (repeatable).
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
        /// An IP address the node is reached at (repeatable).
        #[arg(long = "ip", value_name = "ADDR")]
        ips: Vec<std::net::IpAddr>,
        /// Validity, e.g. 5y, 90d.
        #[arg(long, default_value = "5y", value_parser = humantime::parse_duration)]
        lifetime: Duration,
    },
    /// Create a client's pair (client.NAME.crt, client.NAME.key): client
    /// operations only, never node messages.
    CreateClient {
        /// The client's name (letters, digits, '-', '_').
        name: String,
        /// Validity, e.g. 5y, 90d.
        #[arg(long, default_value = "5y", value_parser = humantime::parse_duration)]
        lifetime: Duration,
    },
    /// List the certificates in CERTS_DIR: subject, role, hosts, expiry.
    List {
        /// Flag certificates expiring within this window.
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        warn_before: Duration,
    },
    /// Re-issue the node pair in CERTS_DIR in place (same hosts, new key):
    /// a running node picks it up within seconds, without a restart.
    Rotate {
        /// Validity of the new certificate.
        #[arg(long, default_value = "5y", value_parser = humantime::parse_duration)]
        lifetime: Duration,
    },
}

/// Runs a `levee cert` subcommand on `dir`, the CA key at `ca_key`
/// (default `dir/ca.key`).
pub fn run(
    command: Cert,
    dir: Option<&Path>,
    ca_key: Option<PathBuf>,
    output: Output,
) -> anyhow::Result<()> {
    let dir = dir.context(
        "levee cert needs --certs-dir DIR (or LEVEE_CERTS_DIR): where the certificates go",
    )?;
    let ca_key = ca_key.unwrap_or_else(|| dir.join(issue::CA_KEY));
    let issued = match command {
        Cert::CreateCa {
            overwrite,
            lifetime,
        } => issue::create_ca(dir, &ca_key, Validity::for_lifetime(lifetime), overwrite)?,
        Cert::CreateNode {
            mut hosts,
            ips,
            lifetime,
        } => {
            hosts.extend(ips.iter().map(|ip| ip.to_string()));
            issue::create_node(dir, &ca_key, &hosts, Validity::for_lifetime(lifetime))?
        }
        Cert::CreateClient { name, lifetime } => {
            issue::create_client(dir, &ca_key, &name, Validity::for_lifetime(lifetime))?
        }
        Cert::Rotate { lifetime } => {
            issue::rotate_node(dir, &ca_key, Validity::for_lifetime(lifetime))?
        }
        Cert::List { warn_before } => {
            return list(dir, warn_before, output);
        }
    };
    match output {
        Output::Json => println!("{}", info_json(&issued, Duration::ZERO)),
        Output::Text => println!("wrote {}", describe_line(&issued, Duration::ZERO)),
    }
    Ok(())
}

fn list(dir: &Path, warn_before: Duration, output: Output) -> anyhow::Result<()> {
    let listed = issue::list(dir)?;
    if output == Output::Json {
        let all: Vec<serde_json::Value> = listed
            .iter()
            .map(|entry| match entry {
                Ok(info) => info_json(info, warn_before),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            })
            .collect();
        println!("{}", serde_json::Value::Array(all));
        return Ok(());
    }
    if listed.is_empty() {
        println!("no certificates in {}", dir.display());
    }
    for entry in listed {
        match entry {
            Ok(info) => println!("{}", describe_line(&info, warn_before)),
            Err(e) => println!("unreadable: {e}"),
        }
    }
    Ok(())
}

fn role(info: &CertInfo) -> &'static str {
    match (info.is_ca, info.role) {
        (true, _) => "ca",
        (false, Some(role)) => role.name(),
        (false, None) => "none",
    }
}

fn describe_line(info: &CertInfo, warn_before: Duration) -> String {
    let name = info.path.file_name().map_or_else(
        || info.path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let hosts = if info.hosts.is_empty() {
        String::new()
    } else {
        format!("  hosts {}", info.hosts.join(","))
    };
    let flag = match Expiry::of(info.not_after, SystemTime::now(), warn_before) {
        Expiry::Fine => String::new(),
        Expiry::Soon(left) => format!("  EXPIRES IN {} DAYS", left.as_secs().div_ceil(86_400)),
        Expiry::Expired => "  EXPIRED".into(),
    };
    format!(
        "{name:<22} {:<6} {:<40} not after {}{hosts}{flag}",
        role(info),
        info.subject,
        humantime::format_rfc3339_seconds(info.not_after),
    )
}

fn info_json(info: &CertInfo, warn_before: Duration) -> serde_json::Value {
    let unix = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    serde_json::json!({
        "file": info.path,
        "subject": info.subject,
        "role": role(info),
        "hosts": info.hosts,
        "not_before": humantime::format_rfc3339_seconds(info.not_before).to_string(),
        "not_after": humantime::format_rfc3339_seconds(info.not_after).to_string(),
        "not_after_unix": unix(info.not_after),
        "expiring": Expiry::of(info.not_after, SystemTime::now(), warn_before) != Expiry::Fine,
    })
}
