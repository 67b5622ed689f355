//! Recovery after a node loss, as the status samples saw it: when the
//! lost node was marked Out, when every partition had R live replicas
//! again, how many bytes were copied at what rate per node, and how that
//! compares with the configured limit and with the time a byte-bound
//! recovery would take. Pure.
//!
//! | file | what |
//! |---|---|
//! | `events.rs` | the `down`, `out` and `redundant` events, from the samples |
//! | `figures.rs` | [`RecoveryFigures`]: times, bytes, rates, the model |
//! | `markdown.rs` | the figures in summary.md and the comparison |

mod events;
mod figures;
mod markdown;

pub use events::{DOWN, OUT, REDUNDANT, derive as derive_events, window};
pub use figures::RecoveryFigures;
pub use markdown::{lines, table};

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use crate::cluster::Event;
    use crate::scenario::FaultAction;
    use crate::timeline::{ClusterSample, SecondRow};

    /// A kill at `t_s`.
    pub fn fault(t_s: f64) -> Event {
        Event {
            t_s,
            kind: "fault",
            action: Some(FaultAction::Kill),
            node: 2,
            detail: String::new(),
        }
    }

    /// A sample with these node states, under-replicated partitions and
    /// moves in flight.
    pub fn sample(nodes: &[(u64, &str)], under_replicated: usize, moves: usize) -> ClusterSample {
        ClusterSample {
            at_ms: None,
            nodes: nodes.iter().map(|(id, s)| (*id, (*s).to_owned())).collect(),
            under_replicated,
            leader: Some(1),
            moves,
            recovery: None,
        }
    }

    /// An empty second `t` with this sample.
    pub fn row(t: u64, cluster: Option<ClusterSample>) -> SecondRow {
        SecondRow {
            t,
            offered: 0,
            dropped: 0,
            ok: 0,
            goodput: 0.0,
            errors: BTreeMap::new(),
            p50_ms: None,
            p99_ms: None,
            p999_ms: None,
            max_ms: None,
            cluster,
            earlier: Vec::new(),
            status_unreachable: false,
            client: Default::default(),
        }
    }
}
