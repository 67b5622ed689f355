//! Configuration layering (file < LEVEE_* env < flags) and its errors, as
//! an operator meets them.

mod common;

use std::process::Command;

use common::bin;

fn print_config(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(bin("levee-node"));
    cmd.arg("--print-config").args(args);
    for var in [
        "LEVEE_CONFIG",
        "LEVEE_LISTEN",
        "LEVEE_ADMIN",
        "LEVEE_DATA_DIR",
        "LEVEE_DURABILITY",
        "LEVEE_CACHE_BYTES",
        "LEVEE_HEARTBEAT_MS",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run levee-node")
}

#[test]
fn flags_win_over_environment_which_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("levee.toml");
    std::fs::write(
        &file,
        "listen = \"10.0.0.1:1\"\nadmin = \"10.0.0.1:2\"\ndata_dir = \"/from/file\"\ndurability = \"periodic\"\n",
    )
    .unwrap();
    let out = print_config(
        &["--config", file.to_str().unwrap(), "--listen", "10.0.0.3:3"],
        &[
            ("LEVEE_LISTEN", "10.0.0.2:2"),
            ("LEVEE_ADMIN", "10.0.0.2:9"),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let printed: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(printed["listen"].as_str(), Some("10.0.0.3:3"), "flag wins");
    assert_eq!(
        printed["admin"].as_str(),
        Some("10.0.0.2:9"),
        "env wins over file"
    );
    assert_eq!(
        printed["data_dir"].as_str(),
        Some("/from/file"),
        "file wins over default"
    );
    assert_eq!(printed["durability"].as_str(), Some("periodic"));
}

#[test]
fn durations_and_sizes_take_units_in_the_file_the_environment_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("levee.toml");
    std::fs::write(
        &file,
        "frame_timeout_ms = \"5s\"\nmax_value_bytes = \"1MiB\"\nhint_max_bytes_per_node = 4096\ntombstone_grace_ms = \"2d\"\n",
    )
    .unwrap();
    let out = print_config(
        &[
            "--config",
            file.to_str().unwrap(),
            "--raft-heartbeat-ms",
            "300ms",
            "--max-inflight-bytes",
            "64MiB",
        ],
        &[
            ("LEVEE_CACHE_BYTES", "128MiB"),
            ("LEVEE_HEARTBEAT_MS", "2s"),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let printed: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let int = |key: &str| printed[key].as_integer();
    assert_eq!(int("frame_timeout_ms"), Some(5_000));
    assert_eq!(int("max_value_bytes"), Some(1 << 20));
    assert_eq!(int("hint_max_bytes_per_node"), Some(4096), "a bare number");
    assert_eq!(int("tombstone_grace_ms"), Some(2 * 86_400_000));
    assert_eq!(int("raft_heartbeat_ms"), Some(300));
    assert_eq!(int("max_inflight_bytes"), Some(64 << 20));
    assert_eq!(int("cache_bytes"), Some(128 << 20));
    assert_eq!(int("heartbeat_ms"), Some(2_000));

    // A value that is no duration is an error naming the key and saying
    // what it takes, from the file and from a flag alike.
    std::fs::write(&file, "frame_timeout_ms = \"soon\"\n").unwrap();
    let out = print_config(&["--config", file.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("frame_timeout_ms") && stderr.contains("30s") && stderr.contains("soon"),
        "{stderr}"
    );
    let out = print_config(&["--cache-bytes", "lots"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(
        stderr.contains("--cache-bytes") && stderr.contains("256MiB"),
        "{stderr}"
    );
}

#[test]
fn the_default_durability_is_per_write() {
    let out = print_config(&[], &[]);
    let printed: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(printed["durability"].as_str(), Some("per_write"));
}

#[test]
fn a_bad_config_file_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("levee.toml");
    std::fs::write(&file, "lsiten = \"x\"\n").unwrap();
    let out = print_config(&["--config", file.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("lsiten") && stderr.contains("levee.toml"),
        "{stderr}"
    );
}

#[test]
fn cli_help_documents_the_exit_codes() {
    let out = Command::new(bin("levee")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for line in [
        "0  success",
        "1  error",
        "2  usage error",
        "3  key not found",
    ] {
        assert!(help.contains(line), "--help lacks {line:?}:\n{help}");
    }
}
