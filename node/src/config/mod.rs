//! The node's configuration: one struct, defaults defined once, layered
//! from a TOML file, then `LEVEE_*` environment variables, then flags.
//!
//! This file is the schema: every field with its default and why, and the
//! types the fields and errors use. `layering.rs` reads the file, applies
//! the environment and flags ([`Overrides`]) and checks the result;
//! `options.rs` turns a `Config` into the settings of the floors below.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::proto::Limits;
use crate::storage::Durability;

mod layering;
mod options;

pub use layering::Overrides;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Everything a node can be told. Every field has a default, so an empty
/// file (or none) is a working single-node configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where sled keeps this node's data.
    pub data_dir: PathBuf,
    /// Address of the levee protocol listener (`HOST:PORT`).
    pub listen: String,
    /// Address of the HTTP admin listener (`/health/live`, `/health/ready`).
    pub admin: String,
    /// Protocol address other nodes and clients should use to reach this
    /// one, when it differs from `listen` (e.g. `listen = "0.0.0.0:7400"`
    /// in a container). Empty means `listen`.
    pub advertise: String,
    /// Start a new cluster if this node has no identity yet. A node with
    /// an identity ignores it and restarts as itself.
    pub init: bool,
    /// Seeds (`HOST:PORT`) to join through if this node has no identity
    /// yet. With neither `init` nor `join`, a node without an identity
    /// starts a new single-node cluster.
    pub join: Vec<String>,
    /// Failure domain (rack, zone) of this node.
    pub zone: String,
    /// Relative placement weight of this node (e.g. disk GiB).
    pub capacity: u64,
    /// For a new cluster: replicas per partition (R).
    pub replicas: u8,
    /// For a new cluster: Raft voters (1, 3 or 5); later nodes are
    /// learners. Three survives one loss; five survives two.
    pub voters: u8,
    /// Raft heartbeat interval (ms). Also how fast the map reaches every
    /// node.
    #[serde(deserialize_with = "crate::units::de_millis")]
    pub raft_heartbeat_ms: u64,
    /// Raft election timeout (ms, minimum; maximum is twice it). Several
    /// heartbeats long so one delayed beat does not start an election.
    #[serde(deserialize_with = "crate::units::de_millis")]
    pub raft_election_timeout_ms: u64,
    /// How long a joining node keeps asking the seeds (ms).
    #[serde(deserialize_with = "crate::units::de_millis")]
    pub join_timeout_ms: u64,
    /// Bytes of hints kept for one unreachable node. Past it, hints are
    /// dropped and anti-entropy repairs instead: a node that is gone for
    /// long must not fill this node's disk.
    #[serde(deserialize_with = "crate::units::de_bytes")]
    pub hint_max_bytes_per_node: u64,
    /// Hint bytes replayed per second once a node is back (all targets
    /// together), so a returning node is caught up without being flooded.
    #[serde(deserialize_with = "crate::units::de_bytes")]
    pub hint_replay_bytes_per_sec: u64,
    /// Time between periodic anti-entropy rounds (ms).
    #[serde(deserialize_with = "crate::units::de_millis")]
    pub anti_entropy_interval_ms: u64,
    /// Delay before the first anti-entropy round after start (ms): a
    /// restarted node serves first and catches up in the background.
    #[serde(deserialize_with = "crate::units::de_millis")]
    pub anti_entropy_startup_delay_ms: u64,
    /// Keys compared per second by anti-entropy.
    pub anti_entropy_keys_per_sec: u64,
    /// Age (ms) after which a tombstone every replica holds is deleted, and
    /// past which a hint is no longer replayed (it could resurrect a
    /// collected delete). Must exceed the longest a replica can be away
    /// and come back with its data; default one day, far above the
    /// 10-minute down→out interval after which a node's replicas are
    /// rebuilt elsewhere.
    #[serde(deserialize_with = "crate::units::de_millis")]
    pub tombstone_grace_ms: u64,
    /// When a write is on disk relative to its acknowledgement; see
    /// [`Durability`]. Default `per_write`.
    pub durability: Durability,
    /// sled's background flush interval (ms). Bounds the loss window of
    /// `periodic` durability; 500 is sled's own default.
    #[serde(deserialize_with = "crate::units::de_millis")]
    pub flush_every_ms: u64,
    /// sled's page cache (bytes). Default 256 MiB: enough for hot index
    /// pages on a small node without taking over the machine's memory.
    #[serde(deserialize_with = "crate::units::de_bytes")]
    pub cache_bytes: u64,
    /// Storage shards (separate sled instances, opened when first
    /// touched) of a new data directory; an existing one keeps its count.
    /// More shards make a restart's first open cheaper (it opens one
    /// shard, not all the data) at the cost of one flush per shard a
    /// group commit covers. Default 16.
    pub storage_shards: u32,
    /// Number of partitions the key space is split into. Fixed for the
    /// life of the data: changing it re-homes every key.
    pub partitions: u32,
    /// Largest frame accepted (bytes).
    #[serde(deserialize_with = "crate::units::de_bytes_u32")]
    pub max_frame_bytes: u32,
    /// Largest key (bytes).
    #[serde(deserialize_with = "crate::units::de_bytes_u32")]
    pub max_key_bytes: u32,
    /// Largest value (bytes).
    #[serde(deserialize_with = "crate::units::de_bytes_u32")]
    pub max_value_bytes: u32,
    /// Open connections accepted at once; more are closed on arrival.
    /// Bounds the memory a crowd of clients can pin (each may hold one
    /// frame buffer plus its in-flight requests).
    pub max_connections: u32,
    /// Requests one connection may have in flight. Past it the node stops
    /// reading that connection until one finishes (backpressure, not
    /// buffering), so one greedy client cannot take every slot.
    pub max_inflight_per_connection: u32,
    /// Time for a new connection to complete its handshake (ms). Stops idle
    /// sockets from holding connection slots.
    #[serde(deserialize_with = "crate::units::de_millis")]
    pub handshake_timeout_ms: u64,
    /// Time for the rest of a frame to arrive once its first byte has, and
    /// for each response write to finish (ms): a peer that stops sending
    /// mid-frame, or stops reading, loses its connection after it.
    #[serde(deserialize_with = "crate::units::de_millis")]
    pub frame_timeout_ms: u64,
    /// On SIGTERM, how long in-flight requests get to finish (ms).
    #[serde(deserialize_with = "crate::units::de_millis")]
    pub shutdown_grace_ms: u64,
    /// How far a write's version timestamp may be ahead of this node's
    /// clock (ms). Larger tolerates worse client clocks; smaller bounds how
    /// far one bad clock can push versions into the future, where they
    /// would beat every correct later write.
    #[serde(deserialize_with = "crate::units::de_millis")]
    pub max_clock_drift_ms: u64,
    /// Admission control (design §7) on or off. Off, every request runs
    /// at once, as before admission existed: only useful to measure what
    /// admission buys (an overload benchmark runs both in the same run).
    pub admission: bool,
    /// Circuit breakers on this node's calls to its peers (replica writes
    /// and reads, hints, anti-entropy, transfers; `node/peers.rs`), with
    /// the client's settings: a peer whose calls time out five times in a
    /// row is refused at once for a cool-down (1 s, doubling to 4 s)
    /// instead of costing each call a timeout. Off, every call is sent
    /// and waits: only useful to measure what the breakers buy (a
    /// benchmark runs both in the same run).
    pub peer_breakers: bool,
    /// Floor of the adaptive foreground concurrency limit. Too small and a
    /// brief latency spike (or a mix of fast reads and slow synced writes,
    /// which looks like one) throttles the node to a trickle; 32 keeps
    /// group commit batching and a 2-core node busy.
    pub admission_limit_min: u32,
    /// Ceiling of the adaptive limit. Past a few hundred concurrent
    /// requests a node only adds queueing; 1000 leaves room for fast
    /// in-memory reads on large machines.
    pub admission_limit_max: u32,
    /// Where the limit starts (clamped into [min, max]). High (256, the
    /// per-connection cap) so a fresh node takes a client's burst of
    /// group-committed writes; the algorithm lowers it within a few hundred
    /// requests if latency says so.
    pub admission_limit_initial: u32,
    /// Where the limit starts when the node restarts on existing data
    /// (clamped into [min, max]). Low, 32 (the default floor): a node that
    /// comes back is hit at once by every client and coordinator whose
    /// replicas it holds, with a cold page cache, so it starts small and
    /// the limit grows (within ~100 requests to 256) only while latency
    /// stays at its no-load level (gentle rejoin, design §9). A first
    /// start keeps `admission_limit_initial`: nobody routes to it yet.
    pub admission_limit_initial_after_restart: u32,
    /// Foreground requests that may wait for a slot past the limit. Small:
    /// a queue only absorbs bursts; under lasting overload it would just
    /// add latency to every request before refusing them anyway.
    pub admission_queue_len: u32,
    /// Least time a foreground request waits in that queue (ms) before it
    /// is refused with `Overloaded`; it waits up to one current service
    /// time when that is longer (a slot frees within about that), capped
    /// at 1 s. Once the queue stands (for 100 ms it has not been empty,
    /// or everyone who left it had waited this long: overload, not a
    /// burst) this is also the longest wait, and the newest waiter gets
    /// the next slot (`admission/queue.rs`).
    /// Default 1 ms (measured against 5 ms: the same goodput, about 15%
    /// less admitted p99 under overload); longer absorbs larger bursts at low
    /// load, at the price of admitted latency under lasting overload.
    #[serde(deserialize_with = "crate::units::de_millis")]
    pub admission_queue_timeout_ms: u64,
    /// A wait queue that has not been empty for this long (ms), or whose
    /// every leaving waiter had waited `admission_queue_timeout_ms` for
    /// this long (CoDel's interval), is standing: the node is overloaded,
    /// not absorbing a burst, so the newest waiter gets the next slot and
    /// nobody waits past `admission_queue_timeout_ms` until the queue has
    /// been empty for a tenth of this (`admission/queue.rs`). 100 ms, as
    /// Facebook's CoDel-style queues ("Fail at Scale"): far longer than a
    /// burst takes to drain, short enough to switch within a tenth of a
    /// second of an overload. Too short and a burst is served newest
    /// first (unfair, the old waiters refused); too long and an overload
    /// is served oldest first for that long.
    #[serde(deserialize_with = "crate::units::de_millis")]
    pub admission_queue_standing_ms: u64,
    /// How often this node heartbeats the Raft leader (ms), carrying its
    /// load and recovery progress. The failure detector's thresholds
    /// (`down_after`, ...) are cluster settings in the map; this only sets
    /// how often a node says it is alive, so keep it well under them.
    #[serde(deserialize_with = "crate::units::de_millis")]
    pub heartbeat_ms: u64,
    /// For a new cluster: recovery settings written into the first map
    /// (`KEY=VALUE`, the keys of `levee admin set`), e.g.
    /// `down_out_interval=30000` for a test cluster. Later changes go
    /// through `levee admin set`.
    pub recovery: Vec<String>,
    /// Total request bytes admitted requests may hold; past it requests
    /// are refused with `Overloaded`. Bounds memory under a flood of large
    /// writes; 256 MiB fits next to the default 256 MiB sled cache on a
    /// small node.
    #[serde(deserialize_with = "crate::units::de_bytes")]
    pub max_inflight_bytes: u64,
    /// Control requests (Raft, joins, pings, map and status) executing at
    /// once. They are never refused; past the budget they wait. Small,
    /// because control work is tiny, but never shared with clients, so
    /// client load cannot delay a heartbeat into an election.
    pub control_budget: u32,
    /// Background requests (anti-entropy, tombstone collection) are
    /// refused once foreground fills this share of the limit, and this
    /// node's own background senders slow down in proportion to
    /// foreground pressure.
    pub admission_background_share: f64,
    /// Directory of this node's certificates (`ca.crt`, `node.crt`,
    /// `node.key`, made by `levee cert`): every port speaks mutual TLS.
    /// Either this or `insecure` must be set.
    pub certs_dir: Option<PathBuf>,
    /// Serve and call plaintext, with no authentication: anyone who can
    /// reach a port can read, write and send Raft messages. For a laptop
    /// or a test only; it has to be asked for by name.
    pub insecure: bool,
    /// Days before a certificate expires from which the node warns (log,
    /// `levee status`, health `degraded`). 30 days leaves several chances
    /// to renew on a monthly schedule.
    pub cert_warn_before_days: u64,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or
    /// `levee_node=debug`.
    pub log: String,
    /// A warning or error repeated within this interval (ms) is logged
    /// once, then "N more like this" (a dead peer's `Unreachable` every
    /// 500 ms becomes a line per interval); 0 logs every repeat.
    #[serde(deserialize_with = "crate::units::de_millis")]
    pub log_repeat_interval_ms: u64,
    /// Fault injection: milliseconds added to this node's wall clock
    /// (negative: behind), for tests of a node whose clock is wrong
    /// (`tests/data_history.rs`). 0 in any real deployment.
    pub clock_skew_ms: i64,
}

impl Default for Config {
    fn default() -> Self {
        let limits = Limits::default();
        // Admission defaults live with the mechanism, where they are
        // explained.
        let admission = crate::admission::AdmissionConfig::default();
        Self {
            data_dir: PathBuf::from("levee-data"),
            certs_dir: None,
            insecure: false,
            cert_warn_before_days: 30,
            listen: "127.0.0.1:7400".into(),
            admin: "127.0.0.1:7401".into(),
            advertise: String::new(),
            init: false,
            join: Vec::new(),
            zone: "default".into(),
            capacity: 100,
            replicas: 3,
            voters: 3,
            raft_heartbeat_ms: 250,
            raft_election_timeout_ms: 1000,
            join_timeout_ms: 60_000,
            hint_max_bytes_per_node: 64 * 1024 * 1024,
            hint_replay_bytes_per_sec: 8 * 1024 * 1024,
            anti_entropy_interval_ms: 600_000,
            anti_entropy_startup_delay_ms: 2_000,
            anti_entropy_keys_per_sec: 50_000,
            tombstone_grace_ms: 86_400_000,
            durability: Durability::PerWrite,
            flush_every_ms: 500,
            cache_bytes: 256 * 1024 * 1024,
            storage_shards: 16,
            partitions: 256,
            max_frame_bytes: limits.max_frame_bytes,
            max_key_bytes: limits.max_key_bytes,
            max_value_bytes: limits.max_value_bytes,
            max_connections: 1024,
            max_inflight_per_connection: 256,
            handshake_timeout_ms: 5_000,
            frame_timeout_ms: 10_000,
            shutdown_grace_ms: 30_000,
            max_clock_drift_ms: 30_000,
            admission: admission.enabled,
            peer_breakers: true,
            admission_limit_min: admission.limit.min as u32,
            admission_limit_max: admission.limit.max as u32,
            admission_limit_initial: admission.limit.initial as u32,
            admission_limit_initial_after_restart: admission.limit.min as u32,
            admission_queue_len: admission.queue_len as u32,
            admission_queue_timeout_ms: admission.queue_timeout.as_millis() as u64,
            admission_queue_standing_ms: admission.queue_standing_after.as_millis() as u64,
            heartbeat_ms: 1_000,
            recovery: Vec::new(),
            max_inflight_bytes: admission.max_inflight_bytes,
            control_budget: admission.control_budget as u32,
            admission_background_share: admission.background_share,
            log_format: LogFormat::Text,
            // openraft logs routine membership and vote changes at info and
            // warn; its errors are what an operator needs.
            log: "info,openraft=error".into(),
            log_repeat_interval_ms: 30_000,
            clock_skew_ms: 0,
        }
    }
}

/// An on/off flag value (`--admission on|off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not valid TOML for [`Config`].
    #[error("invalid config file {path}: {error}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (it names the line and the field).
        error: Box<toml::de::Error>,
    },
    /// Values that do not fit together.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults_and_they_are_valid() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config, Config::default());
        config.check().unwrap();
    }

    #[test]
    fn a_misspelt_field_is_an_error_naming_it() {
        let err = toml::from_str::<Config>("listne = \"x\"").unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
    }
}
