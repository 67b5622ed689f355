//! `levee admin`: operator changes to the cluster, each committed through
//! the leader's Raft log so every node applies it within a heartbeat.

use anyhow::bail;
use levee_node::client::Client;
use levee_node::cluster::map::{CommandResult, RECOVERY_KEYS, RecoverySettings, SettingValue};
use levee_node::proto::AdminCommand;

use crate::Output;

/// What `levee admin` can do.
#[derive(Debug, clap::Subcommand)]
pub enum Admin {
    /// Move every replica off a node (throttled like any recovery), then
    /// mark it removed. Watch it with `levee status`.
    Drain {
        /// The node's id (see `levee status`).
        node: u64,
    },
    /// Change recovery settings at run time, e.g.
    /// `levee admin set recovery.bytes_per_sec=8MiB down_out_interval=10m`
    /// (durations as 30s, 10m, 1h; sizes as 512KiB, 32MiB; a bare number
    /// is ms or bytes). `levee admin set --list` shows the keys and
    /// current values.
    Set {
        /// KEY=VALUE pairs, applied in order.
        #[arg(value_name = "KEY=VALUE", required_unless_present = "list")]
        pairs: Vec<String>,
        /// List the settings and their current values.
        #[arg(long)]
        list: bool,
    },
    /// `on`: never mark a node out (for maintenance: nodes may go down
    /// and come back without their data being rebuilt elsewhere).
    Noout {
        /// on or off.
        #[arg(value_parser = ["on", "off"])]
        switch: String,
    },
    /// Request shapes refused because they crashed node handlers (the
    /// query of death); `levee status` lists them.
    #[command(subcommand)]
    Quarantine(Quarantine),
}

/// `levee admin quarantine`.
#[derive(Debug, clap::Subcommand)]
pub enum Quarantine {
    /// Lift every quarantine and forget every strike, once the bug is
    /// fixed (a quarantine also expires on its own).
    Clear,
}

/// Runs an admin command.
pub async fn run(client: &Client, admin: Admin, output: Output) -> anyhow::Result<()> {
    let commands = match admin {
        Admin::Drain { node } => vec![AdminCommand::Drain { node }],
        Admin::Quarantine(Quarantine::Clear) => vec![AdminCommand::ClearQuarantine],
        Admin::Noout { switch } => vec![AdminCommand::Set {
            key: "noout".into(),
            value: switch,
        }],
        Admin::Set { list: true, .. } => {
            let status = client.status().await?;
            print!("{}", settings_text(&status.map.recovery, output));
            return Ok(());
        }
        Admin::Set { pairs, .. } => pairs
            .iter()
            .map(|pair| {
                let Some((key, value)) = pair.split_once('=') else {
                    bail!("{pair:?} is not KEY=VALUE; `levee admin set --list` shows the keys");
                };
                Ok(AdminCommand::Set {
                    key: key.trim().to_owned(),
                    value: value.trim().to_owned(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
    };
    for command in commands {
        let what = describe(&command);
        match client.admin(command).await? {
            CommandResult::Rejected(why) => bail!("{what}: refused: {why}"),
            CommandResult::Applied { epoch } | CommandResult::NodeAdded { epoch, .. } => {
                match output {
                    Output::Json => {
                        println!("{}", serde_json::json!({"done": what, "epoch": epoch}))
                    }
                    Output::Text => println!("{what}: done (map epoch {epoch})"),
                }
            }
        }
    }
    Ok(())
}

fn describe(command: &AdminCommand) -> String {
    match command {
        AdminCommand::Drain { node } => format!("drain node {node}"),
        AdminCommand::Set { key, value } => format!("set {key}={value}"),
        AdminCommand::ClearQuarantine => "clear the quarantine".to_owned(),
    }
}

/// Every setting with its current value and meaning: as typed (`10m`,
/// `32 MiB`) in text; as numbers (ms, bytes) and booleans in JSON, under
/// the same keys `levee admin set` takes.
fn settings_text(s: &RecoverySettings, output: Output) -> String {
    match output {
        Output::Json => format!("{}\n", settings_json(s)),
        Output::Text => s
            .values()
            .iter()
            .zip(RECOVERY_KEYS)
            .map(|((key, value), (_, meaning))| {
                format!("{key:<30} {:<12} {meaning}\n", value.to_string())
            })
            .collect(),
    }
}

/// The settings as JSON: durations in ms, sizes in bytes, switches as
/// booleans, keyed as `levee admin set` takes them.
pub fn settings_json(s: &RecoverySettings) -> serde_json::Value {
    let object: serde_json::Map<String, serde_json::Value> = s
        .values()
        .into_iter()
        .map(|(key, value)| {
            let json = match value {
                SettingValue::Millis(n) | SettingValue::Bytes(n) | SettingValue::Count(n) => {
                    serde_json::json!(n)
                }
                SettingValue::Number(x) => serde_json::json!(x),
                SettingValue::Switch(on) => serde_json::json!(on),
            };
            (key.to_owned(), json)
        })
        .collect();
    serde_json::Value::Object(object)
}
