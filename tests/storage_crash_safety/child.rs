//! The child processes: a writer run killed with SIGKILL at a chosen
//! moment, and a reopen (`verify`) given a bounded time to finish. Each
//! child's stdout is read line by line on a thread as it comes, so a line
//! is in the parent before the kill can take it; its stderr goes to a
//! file, shown when something fails.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::protocol::Line;

/// How long a reopen may take: opening every shard and reading every
/// key takes well under a second here; past this it is hung, and counted
/// as a directory that does not open.
const VERIFY_DEADLINE: Duration = Duration::from_secs(60);
/// How long the rest of a child's output may take to arrive once it has
/// exited: the pipe closes with the process, so this only bounds a bug.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// Interval between checks of whether a reopen has finished.
const POLL: Duration = Duration::from_millis(5);

/// SIGKILL's number (9 on every Unix).
const SIGKILL: i32 = 9;

/// The `storage_crash` example, run as either child.
pub struct Program {
    /// The built example.
    pub exe: PathBuf,
    /// Where the latest child's stderr goes.
    pub stderr: PathBuf,
}

/// A writer run: what it printed, when, and how it ended.
pub struct WriterRun {
    /// Each line with the time it arrived, from the spawn.
    pub lines: Vec<(Duration, Line)>,
    /// `None` when our SIGKILL ended it; otherwise how it ended by itself
    /// (it failed: a writer that nobody kills runs for a minute).
    pub exited: Option<ExitStatus>,
    /// Lines that did not parse.
    pub garbled: Vec<String>,
}

impl WriterRun {
    /// Since the spawn, when the first line matching `is` arrived.
    pub fn first(&self, is: impl Fn(&Line) -> bool) -> Option<Duration> {
        self.lines.iter().find(|(_, l)| is(l)).map(|(at, _)| *at)
    }
}

/// How a reopen went.
pub enum Reopen {
    /// It opened and reported every key.
    Opened(Vec<Line>),
    /// It did not: why, and its stderr.
    Failed(String),
}

impl Program {
    /// Starts `write DIR RUN SEED`, SIGKILLs it `kill_after` later, and
    /// collects what it printed.
    pub fn run(&self, dir: &Path, run: u64, seed: u64, kill_after: Duration) -> WriterRun {
        let started = Instant::now();
        let mut child = self.spawn(&["write", path(dir), &run.to_string(), &seed.to_string()]);
        let lines = read_lines(&mut child, started);
        std::thread::sleep(kill_after.saturating_sub(started.elapsed()));
        // Kills it whether it still runs or has exited (a zombie until
        // the wait); the status says which.
        child.kill().expect("SIGKILL the writer");
        let status = child.wait().expect("wait for the writer");
        let exited = (status.signal() != Some(SIGKILL)).then_some(status);
        let (lines, garbled) = drain(lines);
        WriterRun {
            lines,
            exited,
            garbled,
        }
    }

    /// Runs `verify DIR` to its end (within [`VERIFY_DEADLINE`]).
    pub fn reopen(&self, dir: &Path) -> Reopen {
        let started = Instant::now();
        let mut child = self.spawn(&["verify", path(dir)]);
        let lines = read_lines(&mut child, started);
        let status = loop {
            if let Some(status) = child.try_wait().expect("poll the reopen") {
                break Some(status);
            }
            if started.elapsed() > VERIFY_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(POLL);
        };
        let (lines, garbled) = drain(lines);
        let lines: Vec<Line> = lines.into_iter().map(|(_, line)| line).collect();
        let why = match status {
            None => Some(format!("hung: no answer within {VERIFY_DEADLINE:?}")),
            Some(status) if !status.success() => Some(format!("exited with {status}")),
            Some(_) if !garbled.is_empty() => Some(format!("garbled lines: {garbled:?}")),
            Some(_) if lines.last() != Some(&Line::Verified) => {
                Some("ended without its last line".into())
            }
            Some(_) => None,
        };
        match why {
            None => Reopen::Opened(lines),
            Some(why) => {
                let said: Vec<String> = lines
                    .iter()
                    .filter(|l| matches!(l, Line::OpenFailed { .. }))
                    .map(Line::to_string)
                    .collect();
                Reopen::Failed(format!("{why}; {said:?}; stderr: {}", self.stderr_text()))
            }
        }
    }

    /// The last child's stderr.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn spawn(&self, args: &[&str]) -> Child {
        let stderr = std::fs::File::create(&self.stderr).expect("child stderr file");
        Command::new(&self.exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn the storage_crash example")
    }
}

fn path(dir: &Path) -> &str {
    dir.to_str().expect("a UTF-8 temporary directory")
}

/// A thread reading the child's stdout, sending each whole line with the
/// time it arrived.
fn read_lines(child: &mut Child, started: Instant) -> mpsc::Receiver<(Duration, Vec<u8>)> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                // A last line without its newline was cut by the kill: it
                // was never all printed, so it is not taken.
                Ok(_) if line.last() == Some(&b'\n') => {
                    line.pop();
                    if tx.send((started.elapsed(), line)).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    });
    rx
}

/// Every line the reader sent, parsed, until the child's stdout closed;
/// and those that did not parse.
fn drain(rx: mpsc::Receiver<(Duration, Vec<u8>)>) -> (Vec<(Duration, Line)>, Vec<String>) {
    let until = Instant::now() + DRAIN_DEADLINE;
    let (mut lines, mut garbled) = (Vec::new(), Vec::new());
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((at, bytes)) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                match text.parse::<Line>() {
                    Ok(line) => lines.push((at, line)),
                    Err(e) => garbled.push(format!("{text:?}: {e}")),
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return (lines, garbled),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("a child's stdout stayed open {DRAIN_DEADLINE:?} after it exited")
            }
        }
    }
}
