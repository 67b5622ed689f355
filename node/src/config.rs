//! The node's configuration: one struct, defaults defined once, layered
//! from a TOML file, then `LEVEE_*` environment variables, then flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::proto::Limits;
use crate::storage::{Durability, StorageConfig};

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
    pub raft_heartbeat_ms: u64,
    /// Raft election timeout (ms, minimum; maximum is twice it). Several
    /// heartbeats long so one delayed beat does not start an election.
    pub raft_election_timeout_ms: u64,
    /// How long a joining node keeps asking the seeds (ms).
    pub join_timeout_ms: u64,
    /// Bytes of hints kept for one unreachable node. Past it, hints are
    /// dropped and anti-entropy repairs instead: a node that is gone for
    /// long must not fill this node's disk.
    pub hint_max_bytes_per_node: u64,
    /// Hint bytes replayed per second once a node is back (all targets
    /// together), so a returning node is caught up without being flooded.
    pub hint_replay_bytes_per_sec: u64,
    /// Time between periodic anti-entropy rounds (ms).
    pub anti_entropy_interval_ms: u64,
    /// Delay before the first anti-entropy round after start (ms): a
    /// restarted node serves first and catches up in the background.
    pub anti_entropy_startup_delay_ms: u64,
    /// Keys compared per second by anti-entropy.
    pub anti_entropy_keys_per_sec: u64,
    /// Age (ms) after which a tombstone every replica holds is deleted, and
    /// past which a hint is no longer replayed (it could resurrect a
    /// collected delete). Must exceed the longest a replica can be away
    /// and come back with its data; default one day, far above the
    /// 10-minute down→out interval after which a node's replicas are
    /// rebuilt elsewhere.
    pub tombstone_grace_ms: u64,
    /// When a write is on disk relative to its acknowledgement; see
    /// [`Durability`]. Default `per_write`.
    pub durability: Durability,
    /// sled's background flush interval (ms). Bounds the loss window of
    /// `periodic` durability; 500 is sled's own default.
    pub flush_every_ms: u64,
    /// sled's page cache (bytes). Default 256 MiB: enough for hot index
    /// pages on a small node without taking over the machine's memory.
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
    pub max_frame_bytes: u32,
    /// Largest key (bytes).
    pub max_key_bytes: u32,
    /// Largest value (bytes).
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
    pub handshake_timeout_ms: u64,
    /// Time for the rest of a frame to arrive once its first byte has (ms).
    pub frame_timeout_ms: u64,
    /// On SIGTERM, how long in-flight requests get to finish (ms).
    pub shutdown_grace_ms: u64,
    /// How far a write's version timestamp may be ahead of this node's
    /// clock (ms). Larger tolerates worse client clocks; smaller bounds how
    /// far one bad clock can push versions into the future, where they
    /// would beat every correct later write.
    pub max_clock_drift_ms: u64,
    /// Admission control (design §7) on or off. Off, every request runs
    /// at once, as before admission existed: only useful to measure what
    /// admission buys (an overload benchmark runs both in the same run).
    pub admission: bool,
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
    /// at 1 s. 100 ms lets a fresh node absorb one connection's full window
    /// (256) of mixed reads and synced writes while the limit is still
    /// settling; a latency-sensitive deployment (or the overload
    /// benchmark) sets a few ms, trading burst absorption for admitted
    /// latency under lasting overload.
    pub admission_queue_timeout_ms: u64,
    /// How often this node heartbeats the Raft leader (ms), carrying its
    /// load and recovery progress. The failure detector's thresholds
    /// (`down_after`, ...) are cluster settings in the map; this only sets
    /// how often a node says it is alive, so keep it well under them.
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
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or
    /// `levee_node=debug`.
    pub log: String,
}

impl Default for Config {
    fn default() -> Self {
        let limits = Limits::default();
        // Admission defaults live with the mechanism, where they are
        // explained.
        let admission = crate::admission::AdmissionConfig::default();
        Self {
            data_dir: PathBuf::from("levee-data"),
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
            admission_limit_min: admission.limit.min as u32,
            admission_limit_max: admission.limit.max as u32,
            admission_limit_initial: admission.limit.initial as u32,
            admission_limit_initial_after_restart: admission.limit.min as u32,
            admission_queue_len: admission.queue_len as u32,
            admission_queue_timeout_ms: admission.queue_timeout.as_millis() as u64,
            heartbeat_ms: 1_000,
            recovery: Vec::new(),
            max_inflight_bytes: admission.max_inflight_bytes,
            control_budget: admission.control_budget as u32,
            admission_background_share: admission.background_share,
            log_format: LogFormat::Text,
            // openraft logs routine membership and vote changes at info and
            // warn; its errors are what an operator needs.
            log: "info,openraft=error".into(),
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

/// Command-line flags, each also readable from a `LEVEE_*` variable. A flag
/// wins over its variable, which wins over the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// Data directory.
    #[arg(long, env = "LEVEE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Protocol listen address.
    #[arg(long, env = "LEVEE_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// HTTP admin listen address.
    #[arg(long, env = "LEVEE_ADMIN", value_name = "HOST:PORT")]
    pub admin: Option<String>,
    /// Address others use to reach this node (default: --listen).
    #[arg(long, env = "LEVEE_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Start a new cluster (ignored once the node has an identity).
    #[arg(long, env = "LEVEE_INIT", conflicts_with = "join")]
    pub init: bool,
    /// Join the cluster of these nodes (ignored once the node has an identity).
    #[arg(
        long,
        env = "LEVEE_JOIN",
        value_name = "HOST:PORT[,...]",
        value_delimiter = ','
    )]
    pub join: Option<Vec<String>>,
    /// Failure domain of this node.
    #[arg(long, env = "LEVEE_ZONE", value_name = "NAME")]
    pub zone: Option<String>,
    /// Placement weight of this node.
    #[arg(long, env = "LEVEE_CAPACITY")]
    pub capacity: Option<u64>,
    /// Replicas per partition, for a new cluster.
    #[arg(long, env = "LEVEE_REPLICAS")]
    pub replicas: Option<u8>,
    /// Raft voters (1, 3 or 5), for a new cluster.
    #[arg(long, env = "LEVEE_VOTERS")]
    pub voters: Option<u8>,
    /// Partition count, for a new cluster.
    #[arg(long, env = "LEVEE_PARTITIONS")]
    pub partitions: Option<u32>,
    /// Raft heartbeat interval in ms.
    #[arg(long, env = "LEVEE_RAFT_HEARTBEAT_MS", value_name = "MS")]
    pub raft_heartbeat_ms: Option<u64>,
    /// Raft election timeout in ms.
    #[arg(long, env = "LEVEE_RAFT_ELECTION_TIMEOUT_MS", value_name = "MS")]
    pub raft_election_timeout_ms: Option<u64>,
    /// Time between anti-entropy rounds in ms.
    #[arg(long, env = "LEVEE_ANTI_ENTROPY_INTERVAL_MS", value_name = "MS")]
    pub anti_entropy_interval_ms: Option<u64>,
    /// Delay before the first anti-entropy round in ms.
    #[arg(long, env = "LEVEE_ANTI_ENTROPY_STARTUP_DELAY_MS", value_name = "MS")]
    pub anti_entropy_startup_delay_ms: Option<u64>,
    /// Tombstone grace period in ms.
    #[arg(long, env = "LEVEE_TOMBSTONE_GRACE_MS", value_name = "MS")]
    pub tombstone_grace_ms: Option<u64>,
    /// Hint bytes kept per unreachable node.
    #[arg(long, env = "LEVEE_HINT_MAX_BYTES_PER_NODE", value_name = "BYTES")]
    pub hint_max_bytes_per_node: Option<u64>,
    /// Durability of acknowledged writes.
    #[arg(long, env = "LEVEE_DURABILITY", value_enum)]
    pub durability: Option<Durability>,
    /// sled flush interval in ms.
    #[arg(long, env = "LEVEE_FLUSH_EVERY_MS", value_name = "MS")]
    pub flush_every_ms: Option<u64>,
    /// sled cache size in bytes.
    #[arg(long, env = "LEVEE_CACHE_BYTES", value_name = "BYTES")]
    pub cache_bytes: Option<u64>,
    /// Storage shards of a new data directory (1..=256).
    #[arg(long, env = "LEVEE_STORAGE_SHARDS", value_name = "N")]
    pub storage_shards: Option<u32>,
    /// Largest value in bytes.
    #[arg(long, env = "LEVEE_MAX_VALUE_BYTES", value_name = "BYTES")]
    pub max_value_bytes: Option<u32>,
    /// Largest key in bytes.
    #[arg(long, env = "LEVEE_MAX_KEY_BYTES", value_name = "BYTES")]
    pub max_key_bytes: Option<u32>,
    /// Largest frame in bytes.
    #[arg(long, env = "LEVEE_MAX_FRAME_BYTES", value_name = "BYTES")]
    pub max_frame_bytes: Option<u32>,
    /// Shutdown grace period in ms.
    #[arg(long, env = "LEVEE_SHUTDOWN_GRACE_MS", value_name = "MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// Admission control on or off.
    #[arg(long, env = "LEVEE_ADMISSION", value_enum)]
    pub admission: Option<Switch>,
    /// Floor of the adaptive concurrency limit.
    #[arg(long, env = "LEVEE_ADMISSION_LIMIT_MIN")]
    pub admission_limit_min: Option<u32>,
    /// Ceiling of the adaptive concurrency limit.
    #[arg(long, env = "LEVEE_ADMISSION_LIMIT_MAX")]
    pub admission_limit_max: Option<u32>,
    /// Initial adaptive concurrency limit.
    #[arg(long, env = "LEVEE_ADMISSION_LIMIT_INITIAL")]
    pub admission_limit_initial: Option<u32>,
    /// Initial adaptive concurrency limit after a restart on existing data.
    #[arg(long, env = "LEVEE_ADMISSION_LIMIT_INITIAL_AFTER_RESTART")]
    pub admission_limit_initial_after_restart: Option<u32>,
    /// Foreground requests that may wait past the limit.
    #[arg(long, env = "LEVEE_ADMISSION_QUEUE_LEN")]
    pub admission_queue_len: Option<u32>,
    /// Longest wait in the admission queue, in ms.
    #[arg(long, env = "LEVEE_ADMISSION_QUEUE_TIMEOUT_MS", value_name = "MS")]
    pub admission_queue_timeout_ms: Option<u64>,
    /// Heartbeat interval to the Raft leader in ms.
    #[arg(long, env = "LEVEE_HEARTBEAT_MS", value_name = "MS")]
    pub heartbeat_ms: Option<u64>,
    /// A recovery setting for a new cluster, KEY=VALUE (repeatable; in the
    /// environment, comma-separated).
    #[arg(
        long = "recovery",
        env = "LEVEE_RECOVERY",
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    pub recovery: Option<Vec<String>>,
    /// Request bytes admitted requests may hold in total.
    #[arg(long, env = "LEVEE_MAX_INFLIGHT_BYTES", value_name = "BYTES")]
    pub max_inflight_bytes: Option<u64>,
    /// Control requests executing at once.
    #[arg(long, env = "LEVEE_CONTROL_BUDGET")]
    pub control_budget: Option<u32>,
    /// Requests in flight per connection.
    #[arg(long, env = "LEVEE_MAX_INFLIGHT_PER_CONNECTION")]
    pub max_inflight_per_connection: Option<u32>,
    /// Log format.
    #[arg(long, env = "LEVEE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter.
    #[arg(long, env = "LEVEE_LOG", value_name = "FILTER")]
    pub log: Option<String>,
}

impl Config {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_owned(),
            error: Box::new(error),
        })
    }

    /// The file (or defaults without one), overridden by environment and
    /// flags, then checked.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply(overrides.clone());
        config.check()?;
        Ok(config)
    }

    fn apply(&mut self, o: Overrides) {
        fn set<T>(field: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *field = v;
            }
        }
        set(&mut self.data_dir, o.data_dir);
        set(&mut self.listen, o.listen);
        set(&mut self.admin, o.admin);
        set(&mut self.advertise, o.advertise);
        if o.init {
            self.init = true;
        }
        set(&mut self.join, o.join);
        set(&mut self.zone, o.zone);
        set(&mut self.capacity, o.capacity);
        set(&mut self.replicas, o.replicas);
        set(&mut self.voters, o.voters);
        set(&mut self.partitions, o.partitions);
        set(&mut self.raft_heartbeat_ms, o.raft_heartbeat_ms);
        set(
            &mut self.raft_election_timeout_ms,
            o.raft_election_timeout_ms,
        );
        set(&mut self.durability, o.durability);
        set(&mut self.flush_every_ms, o.flush_every_ms);
        set(&mut self.cache_bytes, o.cache_bytes);
        set(&mut self.storage_shards, o.storage_shards);
        set(&mut self.max_value_bytes, o.max_value_bytes);
        set(&mut self.max_key_bytes, o.max_key_bytes);
        set(&mut self.max_frame_bytes, o.max_frame_bytes);
        set(&mut self.shutdown_grace_ms, o.shutdown_grace_ms);
        if let Some(switch) = o.admission {
            self.admission = switch == Switch::On;
        }
        set(&mut self.admission_limit_min, o.admission_limit_min);
        set(&mut self.admission_limit_max, o.admission_limit_max);
        set(&mut self.admission_limit_initial, o.admission_limit_initial);
        set(
            &mut self.admission_limit_initial_after_restart,
            o.admission_limit_initial_after_restart,
        );
        set(&mut self.admission_queue_len, o.admission_queue_len);
        set(
            &mut self.admission_queue_timeout_ms,
            o.admission_queue_timeout_ms,
        );
        set(&mut self.max_inflight_bytes, o.max_inflight_bytes);
        set(&mut self.heartbeat_ms, o.heartbeat_ms);
        set(&mut self.recovery, o.recovery);
        set(&mut self.control_budget, o.control_budget);
        set(
            &mut self.max_inflight_per_connection,
            o.max_inflight_per_connection,
        );
        set(&mut self.log_format, o.log_format);
        set(&mut self.log, o.log);
        set(
            &mut self.anti_entropy_interval_ms,
            o.anti_entropy_interval_ms,
        );
        set(
            &mut self.anti_entropy_startup_delay_ms,
            o.anti_entropy_startup_delay_ms,
        );
        set(&mut self.hint_max_bytes_per_node, o.hint_max_bytes_per_node);
        set(&mut self.tombstone_grace_ms, o.tombstone_grace_ms);
    }

    /// Rejects values that cannot work together.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.limits().check().map_err(ConfigError::Invalid)?;
        let positive = [
            ("partitions", u64::from(self.partitions)),
            ("max_connections", u64::from(self.max_connections)),
            (
                "max_inflight_per_connection",
                u64::from(self.max_inflight_per_connection),
            ),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("frame_timeout_ms", self.frame_timeout_ms),
            ("hint_replay_bytes_per_sec", self.hint_replay_bytes_per_sec),
            ("anti_entropy_interval_ms", self.anti_entropy_interval_ms),
            ("anti_entropy_keys_per_sec", self.anti_entropy_keys_per_sec),
            ("admission_limit_min", u64::from(self.admission_limit_min)),
            ("max_inflight_bytes", self.max_inflight_bytes),
            ("control_budget", u64::from(self.control_budget)),
        ];
        if self.admission_limit_max < self.admission_limit_min {
            return Err(ConfigError::Invalid(format!(
                "admission_limit_max ({}) is below admission_limit_min ({})",
                self.admission_limit_max, self.admission_limit_min
            )));
        }
        if !(self.admission_background_share > 0.0 && self.admission_background_share <= 1.0) {
            return Err(ConfigError::Invalid(format!(
                "admission_background_share is {}; it must be in (0, 1]",
                self.admission_background_share
            )));
        }
        if !matches!(self.voters, 1 | 3 | 5) {
            return Err(ConfigError::Invalid(format!(
                "voters is {}; it must be 1, 3 or 5",
                self.voters
            )));
        }
        if self.replicas == 0 {
            return Err(ConfigError::Invalid("replicas must be at least 1".into()));
        }
        if !(1..=crate::storage::MAX_SHARDS).contains(&self.storage_shards) {
            return Err(ConfigError::Invalid(format!(
                "storage_shards is {}; it must be between 1 and {}",
                self.storage_shards,
                crate::storage::MAX_SHARDS
            )));
        }
        if self.init && !self.join.is_empty() {
            return Err(ConfigError::Invalid(
                "init and join exclude each other".into(),
            ));
        }
        self.recovery_settings()?;
        if self.heartbeat_ms == 0 {
            return Err(ConfigError::Invalid(
                "heartbeat_ms must be at least 1".into(),
            ));
        }
        if self.raft_election_timeout_ms < 3 * self.raft_heartbeat_ms {
            return Err(ConfigError::Invalid(format!(
                "raft_election_timeout_ms ({}) must be at least 3 heartbeats ({} ms) so one late beat does not start an election",
                self.raft_election_timeout_ms,
                3 * self.raft_heartbeat_ms
            )));
        }
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }

    /// The protocol limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_bytes: self.max_frame_bytes,
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
        }
    }

    /// The storage settings.
    pub fn storage(&self) -> StorageConfig {
        StorageConfig {
            path: self.data_dir.join("data"),
            durability: self.durability,
            flush_every_ms: self.flush_every_ms,
            cache_bytes: self.cache_bytes,
            shards: self.storage_shards,
        }
    }

    /// The address others reach this node at.
    pub fn advertised(&self) -> &str {
        if self.advertise.is_empty() {
            &self.listen
        } else {
            &self.advertise
        }
    }

    /// Where the Raft log, the map and the node's identity live.
    pub fn meta_dir(&self) -> PathBuf {
        self.data_dir.join("meta")
    }

    /// The cluster settings.
    pub fn cluster(&self) -> crate::raft::ClusterOptions {
        use crate::cluster::map::Settings;
        use crate::raft::{Bootstrap, ClusterOptions};
        ClusterOptions {
            bootstrap: if self.join.is_empty() {
                Bootstrap::Init
            } else {
                Bootstrap::Join(self.join.clone())
            },
            addr: self.advertised().to_owned(),
            admin: self.admin.clone(),
            zone: self.zone.clone(),
            capacity: self.capacity,
            partitions: self.partitions,
            settings: Settings::majority(self.replicas, self.voters),
            heartbeat: Duration::from_millis(self.raft_heartbeat_ms),
            election_timeout: Duration::from_millis(self.raft_election_timeout_ms),
            join_timeout: Duration::from_millis(self.join_timeout_ms),
            recovery: self.recovery_settings().unwrap_or_default(),
        }
    }

    /// The recovery settings a new cluster starts with: the defaults with
    /// each `recovery` entry applied in order, checked as `levee admin set`
    /// checks them.
    pub fn recovery_settings(&self) -> Result<crate::cluster::map::RecoverySettings, ConfigError> {
        let mut settings = crate::cluster::map::RecoverySettings::default();
        // All assigned first, checked once: `down_after=2000` alone would
        // be shorter than the default `suspect_after` until that is set too.
        for entry in &self.recovery {
            let Some((key, value)) = entry.split_once('=') else {
                return Err(ConfigError::Invalid(format!(
                    "recovery setting {entry:?} is not KEY=VALUE"
                )));
            };
            settings.assign(key.trim(), value.trim()).map_err(|why| {
                ConfigError::Invalid(format!("recovery setting {entry:?}: {why}"))
            })?;
        }
        settings
            .checked()
            .map_err(|why| ConfigError::Invalid(format!("recovery settings: {why}")))?;
        Ok(settings)
    }

    /// Admission control settings for a node restarting on existing data:
    /// the limit starts at `admission_limit_initial_after_restart`.
    pub fn admission_after_restart(&self) -> crate::admission::AdmissionConfig {
        let mut admission = self.admission();
        admission.limit.initial = self.admission_limit_initial_after_restart as usize;
        admission
    }

    /// Admission control settings. The initial limit is clamped into the
    /// bounds, so lowering the ceiling alone is enough.
    pub fn admission(&self) -> crate::admission::AdmissionConfig {
        use crate::admission::{AdmissionConfig, LimitConfig};
        AdmissionConfig {
            enabled: self.admission,
            limit: LimitConfig {
                min: self.admission_limit_min as usize,
                max: self.admission_limit_max as usize,
                initial: self.admission_limit_initial as usize,
                ..LimitConfig::default()
            },
            queue_len: self.admission_queue_len as usize,
            queue_timeout: Duration::from_millis(self.admission_queue_timeout_ms),
            max_inflight_bytes: self.max_inflight_bytes,
            control_budget: self.control_budget as usize,
            background_share: self.admission_background_share,
        }
    }

    /// Shutdown grace as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// The effective configuration as TOML (for `--print-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
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
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("levee.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\nadmin = \"127.0.0.1:2\"\n").unwrap();
        let overrides = Overrides {
            listen: Some("127.0.0.1:3".into()),
            ..Default::default()
        };
        let config = Config::load(Some(&path), &overrides).unwrap();
        assert_eq!(config.listen, "127.0.0.1:3");
        assert_eq!(config.admin, "127.0.0.1:2");
    }

    #[test]
    fn a_misspelt_field_is_an_error_naming_it() {
        let err = toml::from_str::<Config>("listne = \"x\"").unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
    }

    #[test]
    fn a_frame_too_small_for_the_largest_value_is_refused() {
        let config = Config {
            max_frame_bytes: 1024,
            ..Config::default()
        };
        let err = config.check().unwrap_err();
        assert!(err.to_string().contains("max_frame_bytes"), "{err}");
    }

    #[test]
    fn admission_flags_reach_the_controller_settings() {
        let overrides = Overrides {
            admission: Some(Switch::Off),
            admission_limit_min: Some(2),
            admission_limit_max: Some(4),
            ..Default::default()
        };
        let config = Config::load(None, &overrides).unwrap();
        let admission = config.admission();
        assert!(!admission.enabled);
        assert_eq!(admission.limit.max, 4);
        assert_eq!(
            Config::default().admission_after_restart().limit.initial,
            Config::default().admission_limit_min as usize,
            "a restarted node starts at the floor"
        );
        let inverted = Config {
            admission_limit_min: 10,
            admission_limit_max: 5,
            ..Config::default()
        };
        assert!(
            inverted
                .check()
                .unwrap_err()
                .to_string()
                .contains("admission_limit_max")
        );
    }

    #[test]
    fn the_printed_config_parses_back() {
        let config = Config::default();
        assert_eq!(toml::from_str::<Config>(&config.to_toml()).unwrap(), config);
    }
}
