//! Whether a (re)started node's map has caught up with its cluster's:
//! the condition of the startup phase `map_current`, read from Raft's
//! view of this node.

/// What decides whether this node's map is current (the startup phase
/// `map_current`), from Raft's view of this node.
/// Counts are log positions (index + 1), so "nothing" is 0 and needs no
/// special case.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapProgress {
    /// Entries the leader had committed, as announced (`leader_commit`)
    /// in the first `AppendEntries` this node received since it started;
    /// `None` until one arrives. The first one, not the latest: under
    /// steady writes the latest moves on, and chasing it could keep a
    /// node "not current" for good while it is never more than a
    /// heartbeat behind.
    pub announced: Option<u64>,
    /// Entries this node has applied.
    pub applied: u64,
    /// This node leads and has applied an entry of its own term: a
    /// leader's first entry commits everything before it, so its map is
    /// the cluster's.
    pub leading_own_term: bool,
}

impl MapProgress {
    /// Whether this node's map is at least as new as the cluster's was
    /// when the node first heard from its leader.
    pub fn is_current(&self) -> bool {
        self.leading_own_term || self.announced.is_some_and(|c| self.applied >= c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_is_current_once_applied_reaches_the_first_announced_commit() {
        let mut p = MapProgress {
            applied: 40,
            ..MapProgress::default()
        };
        assert!(!p.is_current(), "nothing heard from a leader yet");
        p.announced = Some(42);
        assert!(!p.is_current(), "two committed entries still to apply");
        p.applied = 42;
        assert!(p.is_current());
        let fresh = MapProgress {
            announced: Some(0),
            ..MapProgress::default()
        };
        assert!(fresh.is_current(), "a leader with nothing committed");
        let leader = MapProgress {
            leading_own_term: true,
            ..MapProgress::default()
        };
        assert!(leader.is_current());
    }
}
