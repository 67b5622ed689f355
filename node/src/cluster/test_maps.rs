//! Maps for unit tests of the floors above (data, recovery): built only
//! with the model's own commands, so they are what a real cluster holds.

use super::map::{ClusterMap, Command, NodeSpec, Settings};

/// A map of `nodes` Up nodes, one zone each, default settings (R = 3);
/// the map most unit tests of the services above start from.
pub(crate) fn map_with(nodes: u64, partitions: u32) -> ClusterMap {
    let spec = |i: u64| NodeSpec {
        addr: format!("n{i}"),
        admin: String::new(),
        zone: format!("z{i}"),
        capacity: 1,
        join_token: i,
    };
    let mut map = ClusterMap::default();
    map.apply(&Command::Init {
        cluster_id: 1,
        partitions,
        settings: Settings::default(),
        first: spec(1),
    });
    for i in 2..=nodes {
        map.apply(&Command::AddNode(spec(i)));
    }
    map
}
