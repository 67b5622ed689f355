//! `levee admin`: operator changes to the cluster, each committed through
//! the leader's Raft log so every node applies it within a heartbeat.

use anyhow::bail;
use levee_node::client::Client;
use levee_node::cluster::map::{CommandResult, RECOVERY_KEYS, RecoverySettings};
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
    /// `levee admin set recovery.bytes_per_sec=8388608 down_out_interval=60000`.
    /// `levee admin set --list` shows the keys and current values.
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

/// Every setting with its current value and meaning.
fn settings_text(s: &RecoverySettings, output: Output) -> String {
    let value = |key: &str| -> String {
        match key {
            "recovery.bytes_per_sec" => s.bytes_per_sec.to_string(),
            "recovery.bytes_burst" => s.bytes_burst.to_string(),
            "recovery.moves_per_sec" => s.moves_per_sec.to_string(),
            "recovery.moves_burst" => s.moves_burst.to_string(),
            "recovery.max_moves" => s.max_moves.to_string(),
            "recovery.max_moves_per_node" => s.max_moves_per_node.to_string(),
            "recovery.pressure_floor" => s.pressure_floor.to_string(),
            "suspect_after" => s.suspect_after_ms.to_string(),
            "down_after" => s.down_after_ms.to_string(),
            "down_out_interval" => s.down_out_interval_ms.to_string(),
            "min_in_ratio" => s.min_in_ratio.to_string(),
            "noout" => if s.noout { "on" } else { "off" }.to_owned(),
            "zone_guard" => if s.zone_guard { "on" } else { "off" }.to_owned(),
            _ => "?".to_owned(),
        }
    };
    match output {
        Output::Json => {
            let object: serde_json::Map<String, serde_json::Value> = RECOVERY_KEYS
                .iter()
                .map(|(k, _)| ((*k).to_owned(), serde_json::Value::String(value(k))))
                .collect();
            format!("{}\n", serde_json::Value::Object(object))
        }
        Output::Text => RECOVERY_KEYS
            .iter()
            .map(|(k, meaning)| format!("{k:<30} {:<12} {meaning}\n", value(k)))
            .collect(),
    }
}
