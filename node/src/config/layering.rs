//! How a `Config` is put together: the TOML file (or the defaults), then
//! `LEVEE_*` environment variables, then flags, and the check that the
//! result can work.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError, LogFormat, Switch};
use crate::storage::Durability;

/// Command-line flags, each also readable from a `LEVEE_*` variable. A flag
/// wins over its variable, which wins over the file. Durations and sizes
/// take units (`30s`, `256MiB`, see [`crate::units`]) in all three; a
/// bare number is in the unit the name ends with.
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
    /// Directory of this node's certificates (ca.crt, node.crt, node.key;
    /// see `levee cert`): every port speaks mutual TLS.
    #[arg(
        long,
        env = "LEVEE_CERTS_DIR",
        value_name = "DIR",
        conflicts_with = "insecure"
    )]
    pub certs_dir: Option<PathBuf>,
    /// Serve plaintext with no authentication (a laptop or a test only).
    #[arg(long, env = "LEVEE_INSECURE", value_parser = clap::builder::FalseyValueParser::new())]
    pub insecure: bool,
    /// Days before a certificate expires from which the node warns.
    #[arg(long, env = "LEVEE_CERT_WARN_BEFORE_DAYS", value_name = "DAYS")]
    pub cert_warn_before_days: Option<u64>,
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
    /// Raft heartbeat interval (250ms, 30s, 10m; a bare number is ms).
    #[arg(long, env = "LEVEE_RAFT_HEARTBEAT_MS", value_name = "DURATION", value_parser = crate::units::parse_millis)]
    pub raft_heartbeat_ms: Option<u64>,
    /// Raft election timeout (250ms, 30s, 10m; a bare number is ms).
    #[arg(long, env = "LEVEE_RAFT_ELECTION_TIMEOUT_MS", value_name = "DURATION", value_parser = crate::units::parse_millis)]
    pub raft_election_timeout_ms: Option<u64>,
    /// Time between anti-entropy rounds (250ms, 30s, 10m; a bare number is ms).
    #[arg(long, env = "LEVEE_ANTI_ENTROPY_INTERVAL_MS", value_name = "DURATION", value_parser = crate::units::parse_millis)]
    pub anti_entropy_interval_ms: Option<u64>,
    /// Delay before the first anti-entropy round (250ms, 30s, 10m; a bare number is ms).
    #[arg(long, env = "LEVEE_ANTI_ENTROPY_STARTUP_DELAY_MS", value_name = "DURATION", value_parser = crate::units::parse_millis)]
    pub anti_entropy_startup_delay_ms: Option<u64>,
    /// Tombstone grace period (250ms, 30s, 10m; a bare number is ms).
    #[arg(long, env = "LEVEE_TOMBSTONE_GRACE_MS", value_name = "DURATION", value_parser = crate::units::parse_millis)]
    pub tombstone_grace_ms: Option<u64>,
    /// Hint bytes kept per unreachable node (1GiB; a bare number is
    /// bytes).
    #[arg(long, env = "LEVEE_HINT_MAX_BYTES_PER_NODE", value_name = "SIZE", value_parser = crate::units::parse_bytes)]
    pub hint_max_bytes_per_node: Option<u64>,
    /// Durability of acknowledged writes.
    #[arg(long, env = "LEVEE_DURABILITY", value_enum)]
    pub durability: Option<Durability>,
    /// sled flush interval (250ms, 30s, 10m; a bare number is ms).
    #[arg(long, env = "LEVEE_FLUSH_EVERY_MS", value_name = "DURATION", value_parser = crate::units::parse_millis)]
    pub flush_every_ms: Option<u64>,
    /// sled cache size (4MiB, 256KiB; a bare number is bytes).
    #[arg(long, env = "LEVEE_CACHE_BYTES", value_name = "SIZE", value_parser = crate::units::parse_bytes)]
    pub cache_bytes: Option<u64>,
    /// Storage shards of a new data directory (1..=256).
    #[arg(long, env = "LEVEE_STORAGE_SHARDS", value_name = "N")]
    pub storage_shards: Option<u32>,
    /// Largest value (4MiB, 256KiB; a bare number is bytes).
    #[arg(long, env = "LEVEE_MAX_VALUE_BYTES", value_name = "SIZE", value_parser = crate::units::parse_bytes_u32)]
    pub max_value_bytes: Option<u32>,
    /// Largest key (4MiB, 256KiB; a bare number is bytes).
    #[arg(long, env = "LEVEE_MAX_KEY_BYTES", value_name = "SIZE", value_parser = crate::units::parse_bytes_u32)]
    pub max_key_bytes: Option<u32>,
    /// Largest frame (4MiB, 256KiB; a bare number is bytes).
    #[arg(long, env = "LEVEE_MAX_FRAME_BYTES", value_name = "SIZE", value_parser = crate::units::parse_bytes_u32)]
    pub max_frame_bytes: Option<u32>,
    /// Shutdown grace period (250ms, 30s, 10m; a bare number is ms).
    #[arg(long, env = "LEVEE_SHUTDOWN_GRACE_MS", value_name = "DURATION", value_parser = crate::units::parse_millis)]
    pub shutdown_grace_ms: Option<u64>,
    /// Admission control on or off.
    #[arg(long, env = "LEVEE_ADMISSION", value_enum)]
    pub admission: Option<Switch>,
    /// Circuit breakers on calls to peers on or off.
    #[arg(long, env = "LEVEE_PEER_BREAKERS", value_enum)]
    pub peer_breakers: Option<Switch>,
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
    /// Longest wait in the admission queue (5ms, 1s; a bare number is ms).
    #[arg(long, env = "LEVEE_ADMISSION_QUEUE_TIMEOUT_MS", value_name = "DURATION", value_parser = crate::units::parse_millis)]
    pub admission_queue_timeout_ms: Option<u64>,
    /// A wait queue not empty for this long, or whose waiters all waited
    /// the queue timeout for this long, is standing: newest first, and no
    /// wait past the queue timeout (100ms; a bare number is ms).
    #[arg(long, env = "LEVEE_ADMISSION_QUEUE_STANDING_MS", value_name = "DURATION", value_parser = crate::units::parse_millis)]
    pub admission_queue_standing_ms: Option<u64>,
    /// Heartbeat interval to the Raft leader (250ms, 30s, 10m; a bare number is ms).
    #[arg(long, env = "LEVEE_HEARTBEAT_MS", value_name = "DURATION", value_parser = crate::units::parse_millis)]
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
    /// Request bytes admitted requests may hold in total (256MiB; a bare
    /// number is bytes).
    #[arg(long, env = "LEVEE_MAX_INFLIGHT_BYTES", value_name = "SIZE", value_parser = crate::units::parse_bytes)]
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
    /// A repeated warning or error is logged once per this interval (30s;
    /// a bare number is ms; 0: every time).
    #[arg(long, env = "LEVEE_LOG_REPEAT_INTERVAL_MS", value_name = "DURATION", value_parser = crate::units::parse_millis)]
    pub log_repeat_interval_ms: Option<u64>,
    /// Fault injection: ms added to this node's wall clock (negative:
    /// behind). For tests only.
    #[arg(
        long,
        env = "LEVEE_CLOCK_SKEW_MS",
        value_name = "MS",
        allow_hyphen_values = true
    )]
    pub clock_skew_ms: Option<i64>,
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
        if let Some(dir) = o.certs_dir {
            self.certs_dir = Some(dir);
            self.insecure = false;
        }
        if o.insecure {
            self.insecure = true;
            self.certs_dir = None;
        }
        set(&mut self.cert_warn_before_days, o.cert_warn_before_days);
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
        if let Some(switch) = o.peer_breakers {
            self.peer_breakers = switch == Switch::On;
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
        set(
            &mut self.admission_queue_standing_ms,
            o.admission_queue_standing_ms,
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
        set(&mut self.log_repeat_interval_ms, o.log_repeat_interval_ms);
        set(&mut self.clock_skew_ms, o.clock_skew_ms);
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

    /// The effective configuration as TOML (for `--print-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_printed_config_parses_back() {
        let config = Config::default();
        assert_eq!(toml::from_str::<Config>(&config.to_toml()).unwrap(), config);
    }
}
