//! `levee local ctl`: stop, kill, pause, resume or start one node of a
//! running `levee local`, so a person can try failures without copying
//! arguments from `ps`.
//!
//! The running `levee local` owns its node processes, so it is the one
//! that acts: it listens on a Unix socket in its data directory
//! (`ctl.sock`, reachable only by who can open the directory) and takes
//! one request per connection, a line of JSON, answered by a line of JSON.
//! Both sides bound what they read and how long they wait.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// The socket's name in the data directory.
pub const SOCKET: &str = "ctl.sock";

/// A request is one short line; anything longer is not one of ours.
const MAX_REQUEST: u64 = 256;
/// A reply lists at most 250 nodes: far below this.
const MAX_REPLY: u64 = 256 * 1024;
/// A client that connects and says nothing is dropped after this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests waiting for the cluster's loop; more are refused at once.
pub const QUEUE: usize = 8;

/// What to do to one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// SIGTERM and wait for a clean exit (killed after the grace period).
    Stop,
    /// SIGKILL: no flush, no goodbye, as a crash or a pulled plug.
    Kill,
    /// Start a stopped node again on its data and addresses.
    Start,
    /// SIGSTOP: the process is frozen, its sockets stay open (a hung
    /// node, the hardest kind to detect).
    Pause,
    /// SIGCONT a paused node.
    Resume,
}

/// One request to a running `levee local`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "lowercase")]
pub enum Request {
    /// Act on node `node`.
    Act {
        /// What to do.
        action: Action,
        /// The node's number, as `levee local` and `levee status` print it.
        node: u8,
    },
    /// List the nodes and their processes.
    Ps,
}

/// A node's process as `levee local` sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeProcess {
    /// The node's number.
    pub node: u8,
    /// Protocol address.
    pub addr: String,
    /// Process id while it runs.
    pub pid: Option<u32>,
    /// `running`, `paused` or `stopped`.
    pub state: String,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// What happened, or why not.
    pub message: String,
    /// The nodes after the request.
    pub nodes: Vec<NodeProcess>,
    /// The `levee local` process that answered.
    pub pid: u32,
}

/// A request received, and where its reply goes.
pub type Job = (Request, oneshot::Sender<Reply>);

/// The socket of `levee local` running on `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

/// Binds the control socket. If one is there and answers, another
/// `levee local` runs on this directory: that is an error naming it. A
/// socket nobody answers on is left over from a run that was killed, and
/// is replaced.
pub async fn bind(data_dir: &Path) -> anyhow::Result<UnixListener> {
    let path = socket_path(data_dir);
    if path.exists() {
        if let Ok(reply) = send(data_dir, &Request::Ps, Duration::from_secs(2)).await {
            bail!(
                "a levee local (pid {}) already runs on {}: stop it with Ctrl-C (or `kill {}`), or act on its nodes with `levee local ctl --data-dir {} ps|stop|kill|start N`",
                reply.pid,
                data_dir.display(),
                reply.pid,
                data_dir.display()
            );
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("cannot remove the stale {}", path.display()))?;
    }
    UnixListener::bind(&path).with_context(|| format!("cannot listen on {}", path.display()))
}

/// Accepts requests on `listener` until `jobs`' receiver is dropped; each
/// connection is served on its own task, so a silent client holds nobody
/// up.
pub async fn serve(listener: UnixListener, jobs: mpsc::Sender<Job>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                tokio::spawn(answer(stream, jobs.clone()));
            }
            () = jobs.closed() => return,
        }
    }
}

async fn answer(stream: UnixStream, jobs: mpsc::Sender<Job>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    let reply = match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => return,
        Ok(Err(e)) => refusal(format!("cannot read the request: {e}")),
        Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim()) {
            Err(e) => refusal(format!("not a request: {e}")),
            Ok(request) => {
                let (tx, rx) = oneshot::channel();
                match jobs.try_send((request, tx)) {
                    Err(_) => refusal("busy: too many requests at once".to_owned()),
                    Ok(()) => match rx.await {
                        Ok(reply) => reply,
                        Err(_) => refusal("levee local is stopping".to_owned()),
                    },
                }
            }
        },
    };
    if let Ok(mut text) = serde_json::to_string(&reply) {
        text.push('\n');
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, write.write_all(text.as_bytes())).await;
    }
}

fn refusal(message: String) -> Reply {
    Reply {
        ok: false,
        message,
        nodes: Vec::new(),
        pid: std::process::id(),
    }
}

/// Sends `request` to the `levee local` running on `data_dir` and waits
/// up to `timeout` for its reply.
pub async fn send(data_dir: &Path, request: &Request, timeout: Duration) -> anyhow::Result<Reply> {
    let path = socket_path(data_dir);
    let exchange = async {
        let stream = UnixStream::connect(&path).await.with_context(|| {
            format!(
                "no levee local runs on {} (cannot connect to {})",
                data_dir.display(),
                path.display()
            )
        })?;
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_string(request).context("cannot encode the request")?;
        line.push('\n');
        write
            .write_all(line.as_bytes())
            .await
            .context("cannot send the request")?;
        let mut answer = String::new();
        BufReader::new(read.take(MAX_REPLY))
            .read_line(&mut answer)
            .await
            .context("cannot read the reply")?;
        serde_json::from_str::<Reply>(answer.trim()).context("levee local's reply is not one")
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("levee local did not answer in {timeout:?}"))?
}

/// The state of process `pid` as the kernel reports it: `paused` if it is
/// stopped by a signal, else `running` (`None`: no such process).
pub fn process_state(pid: u32) -> Option<&'static str> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the command name, which is in parentheses and may
    // itself hold spaces or parentheses: look after the last one.
    let after = stat.rsplit_once(')')?.1;
    match after.split_whitespace().next()? {
        "T" | "t" => Some("paused"),
        "Z" | "X" => None,
        _ => Some("running"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_one_line_of_json() {
        for request in [
            Request::Ps,
            Request::Act {
                action: Action::Kill,
                node: 3,
            },
            Request::Act {
                action: Action::Resume,
                node: 250,
            },
        ] {
            let line = serde_json::to_string(&request).unwrap();
            assert!(!line.contains('\n'));
            assert!((line.len() as u64) < MAX_REQUEST, "{line}");
            assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), request);
        }
        assert!(
            serde_json::from_str::<Request>(r#"{"request":"act","action":"explode","node":1}"#)
                .is_err()
        );
        assert!(
            serde_json::from_str::<Request>(r#"{"request":"act","action":"kill","node":300}"#)
                .is_err()
        );
    }

    #[test]
    fn this_process_runs() {
        assert_eq!(process_state(std::process::id()), Some("running"));
        assert_eq!(process_state(u32::MAX), None);
    }

    #[tokio::test]
    async fn a_request_reaches_the_loop_and_its_reply_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let listener = bind(dir.path()).await.unwrap();
        let (jobs, mut rx) = mpsc::channel(QUEUE);
        tokio::spawn(serve(listener, jobs));
        tokio::spawn(async move {
            while let Some((request, reply)) = rx.recv().await {
                let _ = reply.send(Reply {
                    ok: true,
                    message: format!("{request:?}"),
                    nodes: Vec::new(),
                    pid: 7,
                });
            }
        });
        let request = Request::Act {
            action: Action::Stop,
            node: 2,
        };
        let reply = send(dir.path(), &request, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(reply.ok);
        assert_eq!(reply.message, format!("{request:?}"));
        // A second levee local on the same directory is refused, naming
        // the one that runs.
        let err = bind(dir.path()).await.unwrap_err().to_string();
        assert!(err.contains("pid 7"), "{err}");
        // A line that is not a request gets a clear refusal.
        let mut raw = UnixStream::connect(socket_path(dir.path())).await.unwrap();
        raw.write_all(b"hello\n").await.unwrap();
        let mut answer = String::new();
        BufReader::new(raw).read_line(&mut answer).await.unwrap();
        let reply: Reply = serde_json::from_str(answer.trim()).unwrap();
        assert!(
            !reply.ok && reply.message.contains("not a request"),
            "{reply:?}"
        );
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_missing_one_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = send(dir.path(), &Request::Ps, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("no levee local runs"),
            "{err:#}"
        );
        // A socket file left by a killed run: nobody listens.
        drop(std::os::unix::net::UnixListener::bind(socket_path(dir.path())).unwrap());
        assert!(socket_path(dir.path()).exists());
        bind(dir.path()).await.unwrap();
    }
}
