//! Which learners to promote to Raft voters. Pure.
//!
//! The cluster wants `target` voters (1, 3 or 5). A learner is promoted
//! only once it has caught up, so that adding it does not stall commits
//! while it copies the log, and voters are added so that their count stays
//! odd: going from 1 to 2 voters would make either of two nodes able to
//! stop the cluster, which is worse than one.

use std::collections::BTreeSet;

use super::NodeId;

/// A learner and how far its log is known to have been replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learner {
    /// The learner.
    pub id: NodeId,
    /// Highest log index known to be on it.
    pub matched: Option<u64>,
}

/// The learners to make voters now (possibly none).
pub fn promotions(
    voters: &BTreeSet<NodeId>,
    learners: &[Learner],
    last_log_index: Option<u64>,
    target: usize,
    max_lag: u64,
) -> BTreeSet<NodeId> {
    let Some(last) = last_log_index else {
        return BTreeSet::new();
    };
    let mut ready: Vec<NodeId> = learners
        .iter()
        .filter(|l| !voters.contains(&l.id))
        .filter(|l| l.matched.is_some_and(|m| last.saturating_sub(m) <= max_lag))
        .map(|l| l.id)
        .collect();
    ready.sort_unstable();
    ready.dedup();
    let mut wanted = target.min(voters.len() + ready.len());
    if wanted.is_multiple_of(2) {
        wanted = wanted.saturating_sub(1);
    }
    let adding = wanted.saturating_sub(voters.len());
    ready.into_iter().take(adding).collect()
}

/// The voter set to move to now, or `None` to keep it: each voter in
/// `gone` (its node is out or removed: the cluster decided it is not
/// coming back) is replaced, one for one, by a caught-up learner, then
/// learners are promoted as [`promotions`] says. A gone voter without a
/// replacement stays: removing it alone would leave an even count, or
/// fewer voters than the cluster had.
pub fn next_voters(
    voters: &BTreeSet<NodeId>,
    gone: &BTreeSet<NodeId>,
    learners: &[Learner],
    last_log_index: Option<u64>,
    target: usize,
    max_lag: u64,
) -> Option<BTreeSet<NodeId>> {
    let last = last_log_index?;
    let mut ready: Vec<NodeId> = learners
        .iter()
        .filter(|l| !voters.contains(&l.id) && !gone.contains(&l.id))
        .filter(|l| l.matched.is_some_and(|m| last.saturating_sub(m) <= max_lag))
        .map(|l| l.id)
        .collect();
    ready.sort_unstable();
    ready.dedup();
    let mut next = voters.clone();
    for leaving in voters.intersection(gone) {
        let Some(replacement) = ready.first().copied() else {
            break;
        };
        ready.remove(0);
        next.remove(leaving);
        next.insert(replacement);
    }
    let still_ready: Vec<Learner> = ready
        .iter()
        .map(|&id| Learner {
            id,
            matched: Some(last),
        })
        .collect();
    next.extend(promotions(&next, &still_ready, Some(last), target, max_lag));
    (next != *voters).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_gone_voter_is_replaced_by_a_caught_up_learner() {
        let voters = BTreeSet::from([1, 2, 3]);
        let gone = BTreeSet::from([2]);
        assert_eq!(
            next_voters(
                &voters,
                &gone,
                &[caught_up(4), caught_up(5)],
                Some(100),
                3,
                10
            ),
            Some(BTreeSet::from([1, 3, 4]))
        );
        assert_eq!(
            next_voters(&voters, &gone, &[], Some(100), 3, 10),
            None,
            "no replacement: the gone voter stays"
        );
        let lagging = Learner {
            id: 4,
            matched: Some(10),
        };
        assert_eq!(
            next_voters(&voters, &gone, &[lagging], Some(100), 3, 10),
            None
        );
        assert_eq!(
            next_voters(&voters, &BTreeSet::new(), &[caught_up(4)], Some(100), 3, 10),
            None,
            "nothing gone, three voters wanted: no change"
        );
    }

    proptest! {
        #[test]
        fn the_next_voter_set_is_odd_never_smaller_and_made_of_known_nodes(
            voters in proptest::collection::btree_set(1u64..8, 1..6),
            gone in proptest::collection::btree_set(1u64..8, 0..4),
            learners in proptest::collection::vec((1u64..12, proptest::option::of(0u64..120)), 0..8),
            target in prop_oneof![Just(1usize), Just(3), Just(5)],
        ) {
            let learners: Vec<Learner> =
                learners.into_iter().map(|(id, matched)| Learner { id, matched }).collect();
            if let Some(next) = next_voters(&voters, &gone, &learners, Some(100), target, 10) {
                prop_assert!(next.len() >= voters.len());
                prop_assert!(next.len() % 2 == 1 || next.len() == voters.len());
                for id in &next {
                    prop_assert!(voters.contains(id) || learners.iter().any(|l| l.id == *id));
                }
                let gone_after = next.intersection(&gone).count();
                let gone_before = voters.intersection(&gone).count();
                prop_assert!(gone_after <= gone_before);
            }
        }
    }

    fn caught_up(id: NodeId) -> Learner {
        Learner {
            id,
            matched: Some(100),
        }
    }

    #[test]
    fn waits_for_two_learners_to_go_from_one_voter_to_three() {
        let voters = BTreeSet::from([1]);
        assert!(promotions(&voters, &[caught_up(2)], Some(100), 3, 10).is_empty());
        assert_eq!(
            promotions(&voters, &[caught_up(2), caught_up(3)], Some(100), 3, 10),
            BTreeSet::from([2, 3])
        );
    }

    #[test]
    fn a_lagging_learner_is_not_promoted() {
        let voters = BTreeSet::from([1]);
        let lagging = Learner {
            id: 3,
            matched: Some(10),
        };
        assert!(promotions(&voters, &[caught_up(2), lagging], Some(100), 3, 10).is_empty());
        let unknown = Learner {
            id: 3,
            matched: None,
        };
        assert!(promotions(&voters, &[caught_up(2), unknown], Some(100), 3, 10).is_empty());
    }

    #[test]
    fn stops_at_the_target() {
        let voters = BTreeSet::from([1, 2, 3]);
        assert!(promotions(&voters, &[caught_up(4), caught_up(5)], Some(100), 3, 10).is_empty());
        assert_eq!(
            promotions(&voters, &[caught_up(4), caught_up(5)], Some(100), 5, 10),
            BTreeSet::from([4, 5])
        );
    }

    proptest! {
        #[test]
        fn voter_count_stays_odd_and_within_target(
            voters in 1usize..6,
            learners in proptest::collection::vec((10u64..30, proptest::option::of(0u64..=100)), 0..8),
            target in prop_oneof![Just(1usize), Just(3), Just(5)],
        ) {
            let voter_set: BTreeSet<NodeId> = (1..=voters as u64).collect();
            let learners: Vec<Learner> = learners.into_iter().map(|(id, matched)| Learner { id, matched }).collect();
            let added = promotions(&voter_set, &learners, Some(100), target, 5);
            if !added.is_empty() {
                let after = voters + added.len();
                prop_assert!(after % 2 == 1, "{} voters", after);
                prop_assert!(after <= target.max(voters));
                prop_assert!(added.iter().all(|id| learners.iter().any(|l| l.id == *id && l.matched.is_some_and(|m| m >= 95))));
            }
        }
    }
}
