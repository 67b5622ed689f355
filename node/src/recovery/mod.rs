//! Recovery mechanisms: rate limits for work caused by failure. The
//! failure detector and the replica checker come here too.

pub mod checker;
pub mod detector;
pub mod heartbeat;
pub mod leader;
pub mod sender;
pub mod transfer;

use std::time::Duration;

/// Twenty times what one pass over a map costs per replica entry (the
/// checker's plan, a beat's `size_candidates`: about 5 ns each).
const NS_PER_REPLICA_ENTRY: u64 = 100;

/// The least gap between two passes over a map of `partitions` ×
/// `replicas` replica entries that keeps them within a twentieth of a
/// core: 20 ms at 65,536 partitions of 3, 19 µs at 64. The leader's
/// re-plan ([`leader::replan_gap`]) and the epoch beats
/// ([`heartbeat::epoch_beat_gap`]) are paced by it. Pure.
pub fn map_pass_gap(partitions: u32, replicas: u8) -> Duration {
    let entries = u64::from(partitions) * u64::from(replicas);
    Duration::from_nanos(entries.saturating_mul(NS_PER_REPLICA_ENTRY))
}
