//! Faults on a docker compose cluster (`docker/compose.yml`), done through
//! `docker/cluster.sh`: the runner drives the containers the same way an
//! operator would, so a scenario can kill, freeze or cut off a node of the
//! containerised cluster.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use super::scenario::{Fault, FaultAction};

/// Time one `cluster.sh` action may take (a `docker kill` is instant; a
/// `start` waits for the container to be healthy).
const ACTION_TIMEOUT: Duration = Duration::from_secs(120);

/// The `cluster.sh` subcommand for a fault action; `None` for `slow`:
/// its duty cycle needs a signal every few tens of milliseconds, and each
/// `docker pause` is a round trip through the docker CLI and daemon of
/// about that long.
pub fn subcommand(action: FaultAction) -> Option<&'static str> {
    Some(match action {
        FaultAction::Kill => "kill",
        // SIGSTOP's container equivalent: frozen, connections stay open.
        FaultAction::Stop => "pause",
        FaultAction::Cont => "unpause",
        // After a kill, `start` brings the container back on its volume.
        FaultAction::Restart => "start",
        FaultAction::Partition => "partition",
        FaultAction::Heal => "heal",
        FaultAction::Slow => return None,
    })
}

/// Runs `script SUBCOMMAND N` for a fault, within [`ACTION_TIMEOUT`].
pub async fn apply(script: &PathBuf, fault: &Fault) -> anyhow::Result<()> {
    let Some(sub) = subcommand(fault.action) else {
        bail!(
            "{} needs local processes (a SIGSTOP/SIGCONT duty cycle); the docker cluster has no equivalent",
            fault.action
        );
    };
    let mut command = tokio::process::Command::new(script);
    command
        .arg(sub)
        .arg(fault.node.to_string())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(ACTION_TIMEOUT, command.output())
        .await
        .with_context(|| {
            format!(
                "{} {sub} {} took more than {ACTION_TIMEOUT:?}",
                script.display(),
                fault.node
            )
        })?
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} {sub} {} failed ({}): {}",
            script.display(),
            fault.node,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_has_a_docker_equivalent() {
        for (action, sub) in [
            (FaultAction::Kill, "kill"),
            (FaultAction::Stop, "pause"),
            (FaultAction::Cont, "unpause"),
            (FaultAction::Restart, "start"),
            (FaultAction::Partition, "partition"),
            (FaultAction::Heal, "heal"),
        ] {
            assert_eq!(subcommand(action), Some(sub));
        }
        assert_eq!(subcommand(FaultAction::Slow), None);
    }
}
