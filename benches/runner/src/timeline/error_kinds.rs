//! How the report groups failures: each client error is one of a few
//! kinds, from what the client saw (its own timeout, a refusal for load,
//! no replica reachable, anything else).

use levee_node::client::ClientError;
use levee_node::proto::WireError;
use serde::Serialize;

/// Why a request failed, as the report groups failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No answer within the request timeout, or the node gave up on the
    /// deadline.
    Timeout,
    /// A node refused for load.
    Overloaded,
    /// No replica could serve: unreachable, closed, shutting down, no
    /// leader, quorum not reached.
    Unavailable,
    /// Anything else (a bug, a refused request, a bad answer).
    Other,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 4] = [
        ErrorKind::Timeout,
        ErrorKind::Overloaded,
        ErrorKind::Unavailable,
        ErrorKind::Other,
    ];

    /// Lower-case name, as in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Overloaded => "overloaded",
            Self::Unavailable => "unavailable",
            Self::Other => "other",
        }
    }
}

/// The kind of a client failure.
pub fn classify(error: &ClientError) -> ErrorKind {
    match error {
        ClientError::Timeout { .. } => ErrorKind::Timeout,
        ClientError::Connect { .. }
        | ClientError::ConnectTimeout { .. }
        | ClientError::HeldOff { .. }
        | ClientError::Handshake { .. }
        | ClientError::Tls { .. }
        | ClientError::NoEndpoints
        | ClientError::BreakerOpen { .. }
        | ClientError::ConnectionClosed { reason: None, .. } => ErrorKind::Unavailable,
        ClientError::ConnectionClosed {
            reason: Some(wire), ..
        } => classify_wire(wire),
        ClientError::Server(wire) => classify_wire(wire),
        // What the last endpoint said is the telling part.
        ClientError::AllEndpointsFailed { last, .. } => classify(last),
        // A request that crashes handlers is a bug, whatever it looked like.
        // Refused by the client's own limits check: a bad request.
        ClientError::Unexpected(_) | ClientError::QueryOfDeath { .. } | ClientError::Invalid(_) => {
            ErrorKind::Other
        }
        // Refused by the client's own throttle: overload, seen early.
        ClientError::Throttled { .. } => ErrorKind::Overloaded,
    }
}

/// The kind of an error a node answered with.
pub fn classify_wire(error: &WireError) -> ErrorKind {
    match error {
        WireError::DeadlineExceeded => ErrorKind::Timeout,
        WireError::Overloaded { .. } => ErrorKind::Overloaded,
        WireError::ShuttingDown
        | WireError::NotLeader { .. }
        | WireError::Unavailable { .. }
        | WireError::QuorumFailed { .. }
        | WireError::NotReplica { .. }
        | WireError::StaleMap { .. }
        | WireError::PartitionOpening { .. } => ErrorKind::Unavailable,
        _ => ErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn errors_are_classified_by_what_the_client_saw() {
        let addr = || "127.0.0.2:7400".to_string();
        let timeout = ClientError::Timeout {
            addr: addr(),
            after: ms(1000),
        };
        assert_eq!(classify(&timeout), ErrorKind::Timeout);
        assert_eq!(
            classify(&ClientError::Server(WireError::DeadlineExceeded)),
            ErrorKind::Timeout
        );
        assert_eq!(
            classify(&ClientError::Server(WireError::Overloaded {
                retry_after_ms: 5
            })),
            ErrorKind::Overloaded
        );
        let quorum = WireError::QuorumFailed {
            acked: 1,
            needed: 2,
            replicas: 3,
            detail: String::new(),
        };
        assert_eq!(
            classify(&ClientError::Server(quorum)),
            ErrorKind::Unavailable
        );
        let refused = ClientError::Connect {
            addr: addr(),
            error: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(classify(&refused), ErrorKind::Unavailable);
        let wrapped = ClientError::AllEndpointsFailed {
            tried: 3,
            last: Box::new(ClientError::Server(WireError::Overloaded {
                retry_after_ms: 1,
            })),
        };
        assert_eq!(classify(&wrapped), ErrorKind::Overloaded);
        assert_eq!(
            classify(&ClientError::ConnectionClosed {
                addr: addr(),
                reason: Some(WireError::ShuttingDown)
            }),
            ErrorKind::Unavailable
        );
        assert_eq!(
            classify(&ClientError::Server(WireError::EmptyKey)),
            ErrorKind::Other
        );
    }
}
