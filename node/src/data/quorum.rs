//! Counting replica answers against a quorum. Pure.

/// Where a quorum operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    /// Enough replicas answered.
    Reached,
    /// Not enough answered, but the outstanding ones still could.
    Pending,
    /// Too many failed: the quorum can no longer be reached.
    Impossible,
}

/// Answers so far for one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    needed: usize,
    total: usize,
    acked: usize,
    failed: usize,
}

impl Quorum {
    /// `needed` of `total` replicas must answer; `needed` is capped at
    /// `total` (a partition with fewer replicas than the quorum, as in a
    /// cluster smaller than R, needs all it has) and is at least 1.
    pub fn new(needed: usize, total: usize) -> Self {
        Self {
            needed: needed.clamp(1, total.max(1)),
            total,
            acked: 0,
            failed: 0,
        }
    }

    /// Records a success.
    pub fn ack(&mut self) -> Tally {
        self.acked += 1;
        self.tally()
    }

    /// Records a failure.
    pub fn fail(&mut self) -> Tally {
        self.failed += 1;
        self.tally()
    }

    /// Where things stand.
    pub fn tally(&self) -> Tally {
        if self.acked >= self.needed {
            Tally::Reached
        } else if self.total.saturating_sub(self.failed) < self.needed {
            Tally::Impossible
        } else {
            Tally::Pending
        }
    }

    /// Successes so far.
    pub fn acked(&self) -> usize {
        self.acked
    }

    /// Answers needed.
    pub fn needed(&self) -> usize {
        self.needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn two_of_three() {
        let mut q = Quorum::new(2, 3);
        assert_eq!(q.fail(), Tally::Pending);
        assert_eq!(q.ack(), Tally::Pending);
        assert_eq!(q.ack(), Tally::Reached);
        let mut q = Quorum::new(2, 3);
        q.fail();
        assert_eq!(q.fail(), Tally::Impossible);
    }

    #[test]
    fn a_small_cluster_needs_what_it_has() {
        let mut q = Quorum::new(2, 1);
        assert_eq!(q.needed(), 1);
        assert_eq!(q.ack(), Tally::Reached);
    }

    proptest! {
        #[test]
        fn reached_iff_enough_acks(needed in 1usize..6, total in 1usize..6, answers in proptest::collection::vec(any::<bool>(), 0..6)) {
            let mut q = Quorum::new(needed, total);
            let mut acks = 0;
            let mut fails = 0;
            for ok in answers.into_iter().take(total) {
                let t = if ok { acks += 1; q.ack() } else { fails += 1; q.fail() };
                let need = needed.min(total);
                prop_assert_eq!(t == Tally::Reached, acks >= need);
                if t == Tally::Impossible {
                    prop_assert!(total - fails < need);
                }
            }
        }
    }
}
