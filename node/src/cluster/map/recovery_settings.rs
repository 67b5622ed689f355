//! The recovery settings: how the cluster detects failures and rebuilds
//! lost replicas, changed at run time by `levee admin set` through Raft;
//! their keys, parsing and checks.

use serde::{Deserialize, Serialize};

/// How the cluster detects failures and rebuilds lost replicas. Every
/// field is changed through Raft, so all nodes agree on it and a change
/// takes effect everywhere within a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RecoverySettings {
    /// Bytes per second each node may send for recovery (the sender's
    /// token bucket). Per node rather than per cluster: a node's disk and
    /// network are what a transfer competes with clients for. Default
    /// 32 MiB/s.
    pub bytes_per_sec: u64,
    /// Burst of the bytes bucket (default 4 MiB, a few chunks).
    pub bytes_burst: u64,
    /// Moves the replica checker may start per second, cluster-wide
    /// (default 1).
    pub moves_per_sec: f64,
    /// Burst of the moves bucket (default 4).
    pub moves_burst: u32,
    /// Moves in flight at once, cluster-wide (default 8).
    pub max_moves: u32,
    /// Moves in flight into, and out of, any one node (default 2).
    pub max_moves_per_node: u32,
    /// Fraction of the normal rate a sender keeps when its node is under
    /// full client pressure (default 0.1): recovery yields to clients but
    /// never stops.
    pub pressure_floor: f64,
    /// Silence after which a node is suspected (default 3 s; shown, not
    /// acted on).
    pub suspect_after_ms: u64,
    /// Silence after which a node is marked Down (default 10 s): routing
    /// avoids it, nothing is copied.
    pub down_after_ms: u64,
    /// Silence after which a Down node is marked Out and its replicas are
    /// rebuilt elsewhere (default 600 s: most failures are restarts).
    pub down_out_interval_ms: u64,
    /// Nodes marked Out never leave fewer than this fraction of the
    /// cluster in (default 0.75): when many nodes vanish at once, the
    /// cause is more likely the network than the nodes, and copying their
    /// data onto the rest would only overload the survivors.
    pub min_in_ratio: f64,
    /// Operator switch: while on, no node is marked Out (maintenance).
    pub noout: bool,
    /// Never mark a node Out while every other node of its zone is down
    /// too (default on): a zone that went dark together usually comes
    /// back together, and rebuilding it onto the other zones is the
    /// domino the guard exists for. Off only to measure what it prevents.
    pub zone_guard: bool,
}

// The floats are checked finite on every way in (defaults, `with`), so
// equality is an equivalence and the map can stay `Eq`.
impl Eq for RecoverySettings {}

impl Default for RecoverySettings {
    fn default() -> Self {
        Self {
            bytes_per_sec: 32 * 1024 * 1024,
            bytes_burst: 4 * 1024 * 1024,
            moves_per_sec: 1.0,
            moves_burst: 4,
            max_moves: 8,
            max_moves_per_node: 2,
            pressure_floor: 0.1,
            suspect_after_ms: 3_000,
            down_after_ms: 10_000,
            down_out_interval_ms: 600_000,
            min_in_ratio: 0.75,
            noout: false,
            zone_guard: true,
        }
    }
}

/// The keys `levee admin set` accepts, with what each one means.
pub const RECOVERY_KEYS: &[(&str, &str)] = &[
    (
        "recovery.bytes_per_sec",
        "bytes per second each node may send for recovery (32MiB; bare = bytes)",
    ),
    (
        "recovery.bytes_burst",
        "burst of each sender's bytes bucket (4MiB; bare = bytes)",
    ),
    (
        "recovery.moves_per_sec",
        "moves started per second, cluster-wide",
    ),
    ("recovery.moves_burst", "burst of the moves bucket"),
    (
        "recovery.max_moves",
        "moves in flight at once, cluster-wide",
    ),
    (
        "recovery.max_moves_per_node",
        "moves in flight into or out of one node",
    ),
    (
        "recovery.pressure_floor",
        "fraction of the rate kept under full client pressure (0..1]",
    ),
    (
        "suspect_after",
        "silence before a node is suspected (3s; bare = ms)",
    ),
    (
        "down_after",
        "silence before a node is marked down (10s; bare = ms)",
    ),
    (
        "down_out_interval",
        "silence before a down node is marked out (10m; bare = ms)",
    ),
    ("min_in_ratio", "fraction of nodes that must stay in (0..1]"),
    ("noout", "on: never mark nodes out"),
    (
        "zone_guard",
        "on: never mark out a node whose whole zone is down",
    ),
];

/// A setting's value with its kind, so each place that shows it (the
/// text and JSON of `levee admin set --list`, `levee status -o json`)
/// uses the same key and the same unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SettingValue {
    /// A duration, in milliseconds.
    Millis(u64),
    /// A size or a rate, in bytes.
    Bytes(u64),
    /// A count.
    Count(u64),
    /// A rate or a fraction.
    Number(f64),
    /// On or off.
    Switch(bool),
}

impl std::fmt::Display for SettingValue {
    /// As a person would type it back: `10m`, `32 MiB`, `4`, `0.75`, `on`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::Millis(ms) => write!(
                f,
                "{}",
                humantime::format_duration(std::time::Duration::from_millis(ms))
            ),
            // Exact, so that what is shown can be typed back: the
            // largest binary unit that divides it, else bytes.
            Self::Bytes(n) => {
                let unit = [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
                    .into_iter()
                    .find(|(size, _)| n >= *size && n % size == 0);
                match unit {
                    Some((size, name)) => write!(f, "{} {name}", n / size),
                    None => write!(f, "{n}"),
                }
            }
            Self::Count(n) => write!(f, "{n}"),
            Self::Number(x) => write!(f, "{x}"),
            Self::Switch(on) => f.write_str(if on { "on" } else { "off" }),
        }
    }
}

impl RecoverySettings {
    /// Every setting under its `levee admin set` key, in
    /// [`RECOVERY_KEYS`] order.
    pub fn values(&self) -> Vec<(&'static str, SettingValue)> {
        use SettingValue::*;
        RECOVERY_KEYS
            .iter()
            .map(|(key, _)| {
                let value = match *key {
                    "recovery.bytes_per_sec" => Bytes(self.bytes_per_sec),
                    "recovery.bytes_burst" => Bytes(self.bytes_burst),
                    "recovery.moves_per_sec" => Number(self.moves_per_sec),
                    "recovery.moves_burst" => Count(u64::from(self.moves_burst)),
                    "recovery.max_moves" => Count(u64::from(self.max_moves)),
                    "recovery.max_moves_per_node" => Count(u64::from(self.max_moves_per_node)),
                    "recovery.pressure_floor" => Number(self.pressure_floor),
                    "suspect_after" => Millis(self.suspect_after_ms),
                    "down_after" => Millis(self.down_after_ms),
                    "down_out_interval" => Millis(self.down_out_interval_ms),
                    "min_in_ratio" => Number(self.min_in_ratio),
                    "noout" => Switch(self.noout),
                    _ => Switch(self.zone_guard),
                };
                (*key, value)
            })
            .collect()
    }

    /// A copy with `key` set to `value`, or why not. Checks ranges, so a
    /// typo cannot stop recovery (a rate of 0) or make it unbounded.
    pub fn with(&self, key: &str, value: &str) -> Result<Self, String> {
        let mut next = *self;
        next.assign(key, value)?;
        next.checked()?;
        Ok(next)
    }

    /// Sets one field from text, checking only its own range; call
    /// [`checked`](Self::checked) once all are set (several settings may
    /// only make sense together).
    pub fn assign(&mut self, key: &str, value: &str) -> Result<(), String> {
        fn int(key: &str, value: &str, min: u64) -> Result<u64, String> {
            let v: u64 = value
                .parse()
                .map_err(|_| format!("{key} takes a whole number, not {value:?}"))?;
            if v < min {
                return Err(format!("{key} must be at least {min}"));
            }
            Ok(v)
        }
        fn fraction(key: &str, value: &str) -> Result<f64, String> {
            let v: f64 = value
                .parse()
                .map_err(|_| format!("{key} takes a number, not {value:?}"))?;
            if !(v > 0.0 && v <= 1.0) {
                return Err(format!("{key} must be in (0, 1], not {v}"));
            }
            Ok(v)
        }
        // Durations and sizes as a person types them (`30s`, `10m`,
        // `32MiB`), or a bare number of milliseconds or bytes.
        fn millis(key: &str, value: &str, min: u64) -> Result<u64, String> {
            let v = crate::units::parse_millis(value).map_err(|e| format!("{key} {e}"))?;
            if v < min {
                return Err(format!("{key} must be at least {min} ms"));
            }
            Ok(v)
        }
        fn byte_count(key: &str, value: &str, min: u64) -> Result<u64, String> {
            let v = crate::units::parse_bytes(value).map_err(|e| format!("{key} {e}"))?;
            if v < min {
                return Err(format!("{key} must be at least {min} bytes"));
            }
            Ok(v)
        }
        fn switch(key: &str, value: &str) -> Result<bool, String> {
            match value {
                "on" | "true" | "1" => Ok(true),
                "off" | "false" | "0" => Ok(false),
                _ => Err(format!("{key} takes on or off, not {value:?}")),
            }
        }
        let small = |v: u64| u32::try_from(v).map_err(|_| format!("{key} is too large"));
        let next = self;
        match key {
            "recovery.bytes_per_sec" => next.bytes_per_sec = byte_count(key, value, 1)?,
            "recovery.bytes_burst" => next.bytes_burst = byte_count(key, value, 1)?,
            "recovery.moves_per_sec" => {
                let v: f64 = value
                    .parse()
                    .map_err(|_| format!("{key} takes a number, not {value:?}"))?;
                if !(v.is_finite() && v > 0.0) {
                    return Err(format!("{key} must be a positive number, not {v}"));
                }
                next.moves_per_sec = v;
            }
            "recovery.moves_burst" => next.moves_burst = small(int(key, value, 1)?)?,
            "recovery.max_moves" => next.max_moves = small(int(key, value, 1)?)?,
            "recovery.max_moves_per_node" => next.max_moves_per_node = small(int(key, value, 1)?)?,
            "recovery.pressure_floor" => next.pressure_floor = fraction(key, value)?,
            "suspect_after" => next.suspect_after_ms = millis(key, value, 1)?,
            "down_after" => next.down_after_ms = millis(key, value, 1)?,
            "down_out_interval" => next.down_out_interval_ms = millis(key, value, 1)?,
            "min_in_ratio" => next.min_in_ratio = fraction(key, value)?,
            "noout" => next.noout = switch(key, value)?,
            "zone_guard" => next.zone_guard = switch(key, value)?,
            _ => {
                let known: Vec<&str> = RECOVERY_KEYS.iter().map(|(k, _)| *k).collect();
                return Err(format!(
                    "unknown setting {key:?}; known: {}",
                    known.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Checks the settings against each other and their ranges.
    pub fn checked(&self) -> Result<(), String> {
        let next = self;
        let positive = next.bytes_per_sec > 0
            && next.bytes_burst > 0
            && next.moves_per_sec.is_finite()
            && next.moves_per_sec > 0.0
            && next.moves_burst > 0
            && next.max_moves > 0
            && next.max_moves_per_node > 0;
        let fractions = [next.pressure_floor, next.min_in_ratio]
            .iter()
            .all(|f| *f > 0.0 && *f <= 1.0);
        if !positive || !fractions {
            return Err(format!("recovery settings out of range: {next:?}"));
        }
        if next.down_after_ms < next.suspect_after_ms {
            return Err(format!(
                "down_after ({} ms) must not be shorter than suspect_after ({} ms)",
                next.down_after_ms, next.suspect_after_ms
            ));
        }
        if next.down_out_interval_ms < next.down_after_ms {
            return Err(format!(
                "down_out_interval ({} ms) must not be shorter than down_after ({} ms)",
                next.down_out_interval_ms, next.down_after_ms
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_take_units_or_bare_numbers() {
        let s = RecoverySettings::default();
        let t = s.with("down_out_interval", "1m").unwrap();
        assert_eq!(t.down_out_interval_ms, 60_000);
        let t = s.with("down_out_interval", "90000").unwrap();
        assert_eq!(t.down_out_interval_ms, 90_000, "a bare number is ms");
        let t = s.with("suspect_after", "1500ms").unwrap();
        assert_eq!(t.suspect_after_ms, 1_500);
        let t = s.with("down_after", "1m 30s").unwrap();
        assert_eq!(t.down_after_ms, 90_000);
        let t = s.with("recovery.bytes_per_sec", "8MiB").unwrap();
        assert_eq!(t.bytes_per_sec, 8 * 1024 * 1024);
        let t = s.with("recovery.bytes_burst", "512 KiB").unwrap();
        assert_eq!(t.bytes_burst, 512 * 1024);
        let t = s.with("recovery.bytes_per_sec", "1048576").unwrap();
        assert_eq!(t.bytes_per_sec, 1 << 20, "a bare number is bytes");
        for (key, bad) in [
            ("down_after", "soon"),
            ("down_after", "-1s"),
            ("recovery.bytes_per_sec", "fast"),
            ("recovery.bytes_per_sec", "0"),
            ("down_out_interval", "0s"),
        ] {
            let err = s.with(key, bad).unwrap_err();
            assert!(err.contains(key), "{key}={bad}: {err}");
        }
        // Ranges between settings still hold with units.
        assert!(s.with("down_out_interval", "1s").is_err());
    }

    #[test]
    fn every_setting_shows_as_it_can_be_typed_back() {
        let s = RecoverySettings::default();
        let values = s.values();
        assert_eq!(values.len(), RECOVERY_KEYS.len());
        for (key, value) in values {
            let shown = value.to_string();
            let back = s
                .with(key, &shown)
                .unwrap_or_else(|e| panic!("{key}={shown}: {e}"));
            assert_eq!(back, s, "{key}={shown}");
        }
        let shown: Vec<String> = s.values().iter().map(|(_, v)| v.to_string()).collect();
        assert!(shown.contains(&"10m".to_owned()), "{shown:?}");
        assert!(shown.contains(&"32 MiB".to_owned()), "{shown:?}");
        assert_eq!(SettingValue::Bytes(1_000_000).to_string(), "1000000");
        assert_eq!(SettingValue::Bytes(3 << 30).to_string(), "3 GiB");
    }
}
