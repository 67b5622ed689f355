//! What a `Config` gives the floors below: the protocol limits, the
//! storage, cluster and admission settings, and the node's addresses and
//! directories, each in the form its module takes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Config, ConfigError};
use crate::proto::Limits;
use crate::storage::StorageConfig;
use crate::tls::Transport;

impl Config {
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
            journal_segment_bytes: crate::storage::journal::SEGMENT_BYTES,
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

    /// The certificates directory, `None` for an explicit `insecure`, or
    /// an error when the configuration says neither: plaintext is never
    /// what a node falls back to.
    pub fn security(&self) -> Result<Option<&Path>, ConfigError> {
        match (&self.certs_dir, self.insecure) {
            (Some(dir), false) => Ok(Some(dir)),
            (None, true) => Ok(None),
            (Some(_), true) => Err(ConfigError::Invalid(
                "certs_dir and insecure are both set; choose one".into(),
            )),
            (None, false) => Err(ConfigError::Invalid(
                "no certificates: pass --certs-dir DIR (create them with `levee cert create-ca` and `levee cert create-node`), or --insecure to serve plaintext with no authentication".into(),
            )),
        }
    }

    /// The cluster settings; the others are reached over `transport`.
    pub fn cluster(&self, transport: &Transport) -> crate::raft::ClusterOptions {
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
            transport: transport.clone(),
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
            queue_standing_after: Duration::from_millis(self.admission_queue_standing_ms),
            max_inflight_bytes: self.max_inflight_bytes,
            control_budget: self.control_budget as usize,
            background_share: self.admission_background_share,
        }
    }

    /// Shutdown grace as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Overrides, Switch};

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
}
