//! What a connection's caller may ask, decided from the certificate it
//! proved it holds (never from anything it writes in a message): node
//! messages need a node certificate, client operations any certificate of
//! the cluster's CA with a levee role. Pure, so it is tested without a
//! socket.

use crate::cluster::NodeId;
use crate::proto::op::Op;
use crate::proto::{NodeRequest, Request, WireError};
use crate::tls::{PeerIdentity, Role};

/// A connection's rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authority {
    /// Plaintext, explicitly insecure: everything, as before TLS.
    Insecure,
    /// A verified certificate with a levee role.
    Certified(PeerIdentity),
    /// A certificate of the cluster's CA without a levee role: nothing.
    Unknown,
}

impl Authority {
    /// The rights of a TLS peer with this identity.
    pub fn of(identity: Option<PeerIdentity>) -> Self {
        match identity {
            Some(identity) => Authority::Certified(identity),
            None => Authority::Unknown,
        }
    }

    /// Whether `request` may run, or why not. `addr_of` gives a member's
    /// protocol address from the map the node holds (asked only for a
    /// heartbeat, to check who it claims to come from).
    pub fn permits(
        &self,
        request: &Request,
        addr_of: impl FnOnce(NodeId) -> Option<String>,
    ) -> Result<(), WireError> {
        let denied = |detail: String| Err(WireError::PermissionDenied { detail });
        match (self, request) {
            (Authority::Insecure, _) => Ok(()),
            (Authority::Unknown, _) => denied(
                "the certificate carries no levee role (OU levee-node or levee-client); issue one with `levee cert`".into(),
            ),
            (Authority::Certified(_), Request::Client(_)) => Ok(()),
            (Authority::Certified(who), Request::Node(message)) => {
                if who.role != Role::Node {
                    return denied(format!(
                        "{} is node-only; client certificate {:?} may send client operations only",
                        Op::of(request).name(),
                        who.name
                    ));
                }
                // A node may only join under an address its certificate
                // names: a stolen or misplaced node certificate cannot
                // claim to be some other member.
                if let NodeRequest::Join(spec) = message
                    && !names_host(who, &spec.addr)
                {
                    return denied(format!(
                        "join as {} refused: the node certificate is valid for {:?} only",
                        spec.addr, who.hosts
                    ));
                }
                // Likewise a heartbeat speaks for the member whose address
                // the certificate names, so one node cannot keep another
                // looking alive (or report load for it).
                if let NodeRequest::Heartbeat(report) = message
                    && let Some(addr) = addr_of(report.node)
                    && !names_host(who, &addr)
                {
                    return denied(format!(
                        "heartbeat for node {} ({addr}) refused: the node certificate is valid for {:?} only",
                        report.node, who.hosts
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Whether the certificate lists the host part of `addr`.
fn names_host(who: &PeerIdentity, addr: &str) -> bool {
    let host = crate::tls::host_of(addr);
    who.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::map::NodeSpec;
    use crate::cluster::status::NodeReport;
    use crate::proto::ClientRequest;

    fn who(role: Role, hosts: &[&str]) -> Authority {
        Authority::of(Some(PeerIdentity {
            role,
            name: if role == Role::Node { "node" } else { "alice" }.into(),
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        }))
    }

    fn join(addr: &str) -> Request {
        Request::Node(NodeRequest::Join(NodeSpec {
            addr: addr.into(),
            admin: String::new(),
            zone: "z".into(),
            capacity: 1,
            join_token: 1,
        }))
    }

    fn none(_: NodeId) -> Option<String> {
        None
    }

    fn denied(r: Result<(), WireError>) -> String {
        match r {
            Err(WireError::PermissionDenied { detail }) => detail,
            other => panic!("expected PermissionDenied, got {other:?}"),
        }
    }

    #[test]
    fn a_client_certificate_gets_client_operations_only() {
        let alice = who(Role::Client, &[]);
        assert!(
            alice
                .permits(&Request::Client(ClientRequest::Ping), none)
                .is_ok()
        );
        let detail = denied(alice.permits(&join("127.0.0.1:7000"), none));
        assert!(
            detail.contains("node-only") && detail.contains("alice"),
            "{detail}"
        );
        // A scan is a client's read of what is stored.
        let scan = Request::Client(ClientRequest::Scan {
            partition: 0,
            prefix: b"logs/".to_vec(),
            after: None,
            limit: 100,
            values: true,
            epoch: 0,
        });
        assert!(alice.permits(&scan, none).is_ok());
        assert!(Authority::of(None).permits(&scan, none).is_err());
    }

    #[test]
    fn a_node_certificate_gets_everything_under_its_own_names() {
        let node = who(Role::Node, &["127.0.0.1", "Node1"]);
        assert!(
            node.permits(&Request::Client(ClientRequest::Ping), none)
                .is_ok()
        );
        assert!(node.permits(&join("127.0.0.1:7000"), none).is_ok());
        assert!(node.permits(&join("node1:7000"), none).is_ok());
        let detail = denied(node.permits(&join("127.0.0.2:7000"), none));
        assert!(detail.contains("127.0.0.2:7000"), "{detail}");
    }

    #[test]
    fn a_heartbeat_speaks_only_for_the_member_the_certificate_names() {
        let node = who(Role::Node, &["127.0.0.2"]);
        let beat = |id| {
            Request::Node(NodeRequest::Heartbeat(NodeReport {
                node: id,
                ..NodeReport::default()
            }))
        };
        let addr_of = |id: NodeId| Some(format!("127.0.0.{id}:7400"));
        assert!(node.permits(&beat(2), addr_of).is_ok());
        let detail = denied(node.permits(&beat(3), addr_of));
        assert!(
            detail.contains("node 3") && detail.contains("127.0.0.3:7400"),
            "{detail}"
        );
        // A member the map does not know yet: nothing to check against.
        assert!(node.permits(&beat(9), none).is_ok());
    }

    #[test]
    fn a_certificate_without_a_role_gets_nothing_and_insecure_gets_all() {
        let ping = Request::Client(ClientRequest::Ping);
        assert!(Authority::of(None).permits(&ping, none).is_err());
        assert!(Authority::Insecure.permits(&join("x:1"), none).is_ok());
    }
}
