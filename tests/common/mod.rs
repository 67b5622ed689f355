//! Shared harness for integration tests: real `levee-node` processes on
//! 127.0.0.x addresses, started, killed and restarted, with conditions
//! polled against a deadline instead of slept on.

#![allow(dead_code)]

pub mod certs;
pub mod cluster;
pub mod netns;
pub mod raw;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use levee_node::client::{Client, ClientConfig, admin_http};
use levee_node::tls::{Credentials, Transport};

/// How long a node gets to become ready.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// Builds the binaries once per test process, so a test never runs a
/// stale `levee-node` (the root package cannot name another package's
/// binaries through `CARGO_BIN_EXE_*`).
fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        cargo_build(&[
            "-p",
            "levee-node",
            "-p",
            "levee-cli",
            "-p",
            "levee-bench",
            "--bins",
            // The tests break nodes on purpose (node/src/failpoint.rs).
            "--features",
            "levee-node/failpoints",
        ]);
        profile_dir()
    })
}

/// Builds an example of the root package (`examples/NAME`) and returns
/// its path: the child processes some tests drive.
pub fn example(name: &str) -> PathBuf {
    cargo_build(&["--example", name]);
    let path = profile_dir().join("examples").join(name);
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// `cargo build --quiet ARGS` in the test binary's own profile: `cargo
/// test --release` runs its tests from target/release, and what they
/// start must be built there too, not left stale from an earlier build.
fn cargo_build(args: &[&str]) {
    let profile = match profile_dir().file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(name) => name.to_string(),
        None => panic!("no profile directory above the test binary"),
    };
    let mut command = Command::new(env!("CARGO"));
    // What cargo sets for a test process is no setting of this build: ring's
    // build script watches CARGO_MANIFEST_DIR, and seeing it change made
    // this build and the next `cargo test` rebuild ring and all above it.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_tests = [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
        ]
        .contains(&name.as_ref())
            || name.starts_with("CARGO_PKG_");
        if set_for_tests {
            command.env_remove(name.as_ref());
        }
    }
    let status = command
        .args(["build", "--quiet", "--profile", &profile])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build {args:?} failed");
}

/// target/<profile>: the test binary lives in target/<profile>/deps/.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory")
        .to_path_buf()
}

/// Path of a workspace binary.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// A fresh loopback address with a free port: each node gets its own
/// 127.0.0.x so tests look like several hosts.
pub fn free_addr() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let host = format!("127.0.0.{}", 2 + (std::process::id() + n) % 250);
    let listener = TcpListener::bind(format!("{host}:0")).expect("bind a free port");
    listener.local_addr().expect("local addr").to_string()
}

/// Polls `check` until it returns `Some` or the deadline passes.
pub fn wait_for<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The environment variable `name` parsed, or `default` when it is not
/// set: the knobs of the soaks (a long run of a test asks for more with
/// them). A value that does not parse fails the test, naming it.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={s:?} is not valid: {e}")),
        Err(_) => default,
    }
}

/// Runs `levee bench benches/scenarios/SCENARIO --out OUT` and waits for
/// it, within `deadline` (a hang fails the test instead of stalling CI);
/// its output, once it succeeded.
pub fn bench(scenario: &str, out: &Path, deadline: Duration) -> Output {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/scenarios")
        .join(scenario);
    let mut child = Command::new(bin("levee"))
        .arg("bench")
        .arg(&path)
        .arg("--out")
        .arg(out)
        .env_remove("LEVEE_ENDPOINTS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn levee bench");
    let status = wait_for("levee bench to finish", deadline, || {
        child.try_wait().ok().flatten()
    });
    let output = child.wait_with_output().expect("levee bench output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(status.success(), "levee bench failed ({status}): {stderr}");
    output
}

/// `GET path` on an admin port, plain HTTP when `tls` is `None`: the
/// answer, or `None` if it cannot be had within a few seconds.
pub fn admin_get(
    addr: &str,
    path: &str,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Option<admin_http::Answer> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(admin_http::get(addr, path, tls, Duration::from_secs(3)))
        .ok()
}

/// `GET path` on an admin port of the suite (HTTPS as client "root"): the
/// status code, or `None` if it cannot be reached.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    admin_get(addr, path, certs::client_transport().admin_tls()).map(|a| a.status)
}

/// The body of a GET on an admin port of the suite, if it answers 200.
pub fn http_body(addr: &str, path: &str) -> Option<String> {
    admin_get(addr, path, certs::client_transport().admin_tls())
        .filter(|a| a.status == 200)
        .map(|a| a.body)
}

/// A counter or gauge from Prometheus text (the sum over its label sets).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let series_name = series.split('{').next().unwrap_or_default();
        if series_name == name {
            *found.get_or_insert(0.0) += value.parse::<f64>().ok()?;
        }
    }
    found
}

/// One `levee-node` process and everything needed to restart it as itself.
pub struct TestNode {
    child: Option<Child>,
    /// Protocol address.
    pub addr: String,
    /// HTTP admin address.
    pub admin: String,
    /// Data directory (kept across restarts).
    pub data_dir: PathBuf,
    extra: Vec<String>,
    /// How clients reach it: TLS as client "root" unless started
    /// `--insecure`.
    pub transport: Transport,
    /// `FAILPOINTS` for the process (node/src/failpoint.rs), if any.
    failpoints: Option<String>,
    log: PathBuf,
    /// The network namespace the process runs in (`netns::Hosts`), if
    /// not the test's own.
    netns: Option<String>,
}

impl TestNode {
    /// Starts a node with its data under `dir` and waits until it is ready.
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        Self::start_named(dir, "node", extra)
    }

    /// Like [`TestNode::start`], with data in `dir/name`.
    pub fn start_named(dir: &Path, name: &str, extra: &[&str]) -> Self {
        let mut node = Self::spawn_named(dir, name, extra);
        node.wait_ready();
        node
    }

    /// Starts a node with its data in `dir/name` and its log in
    /// `dir/name.log`, without waiting for it.
    pub fn spawn_named(dir: &Path, name: &str, extra: &[&str]) -> Self {
        let mut node = Self::unstarted(dir, name, extra);
        node.spawn();
        node
    }

    /// Like [`TestNode::start`], with `FAILPOINTS` set to `failpoints`
    /// for this node's process (its restarts included).
    pub fn start_with_failpoints(dir: &Path, extra: &[&str], failpoints: &str) -> Self {
        Self::start_named_with_failpoints(dir, "node", extra, Some(failpoints))
    }

    /// Sets `FAILPOINTS` for this node's next start (and those after).
    pub fn set_failpoints(&mut self, failpoints: Option<&str>) {
        self.failpoints = failpoints.map(str::to_string);
    }

    /// Like [`TestNode::start_named`], with `FAILPOINTS` set to
    /// `failpoints` (if any) for this node's process.
    pub fn start_named_with_failpoints(
        dir: &Path,
        name: &str,
        extra: &[&str],
        failpoints: Option<&str>,
    ) -> Self {
        let mut node = Self::unstarted(dir, name, extra);
        node.failpoints = failpoints.map(str::to_string);
        node.spawn();
        node.wait_ready();
        node
    }

    fn unstarted(dir: &Path, name: &str, extra: &[&str]) -> Self {
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let transport = if extra.iter().any(|a| a == "--insecure") {
            Transport::Plain
        } else if let Some(at) = extra.iter().position(|a| a == "--certs-dir") {
            let own = Path::new(extra.get(at + 1).expect("--certs-dir DIR"));
            Transport::Tls(Credentials::client(own, "root").expect("the node's client root"))
        } else {
            // The suite's default: mutual TLS with the run's CA.
            extra.push("--certs-dir".into());
            extra.push(certs::certs_dir().display().to_string());
            certs::client_transport()
        };
        Self {
            child: None,
            addr: free_addr(),
            admin: free_addr(),
            data_dir: dir.join(name),
            extra,
            transport,
            failpoints: None,
            log: dir.join(format!("{name}.log")),
            netns: None,
        }
    }

    /// Starts a node inside network namespace `netns`, listening on
    /// `ip` (ports 7400 and 7401: the namespace has its own), and waits
    /// until it is ready.
    pub fn start_in_netns(dir: &Path, name: &str, extra: &[&str], netns: &str, ip: &str) -> Self {
        let mut node = Self::unstarted(dir, name, extra);
        node.addr = format!("{ip}:7400");
        node.admin = format!("{ip}:7401");
        node.netns = Some(netns.to_string());
        node.spawn();
        node.wait_ready();
        node
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("node is running");
        wait_for("node exit", deadline, || child.try_wait().ok().flatten())
    }

    fn spawn(&mut self) {
        self.spawn_with(&[]);
    }

    /// Starts the process with `more` flags after the usual ones (this
    /// start only).
    fn spawn_with(&mut self, more: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open node log");
        let mut command = match &self.netns {
            // `ip netns exec` execs the node: the child's pid is the node's.
            Some(netns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", netns]).arg(bin("levee-node"));
                c
            }
            None => Command::new(bin("levee-node")),
        };
        command.env_remove("FAILPOINTS");
        if let Some(failpoints) = &self.failpoints {
            command.env("FAILPOINTS", failpoints);
        }
        let child = command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", &self.addr, "--admin", &self.admin])
            .args(&self.extra)
            .args(more)
            .env_remove("LEVEE_CONFIG")
            .env_remove("LEVEE_CERTS_DIR")
            .env_remove("LEVEE_INSECURE")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn levee-node");
        self.child = Some(child);
    }

    /// Waits until `/health/ready` answers 200.
    pub fn wait_ready(&mut self) {
        let admin = self.admin.clone();
        let tls = self.transport.admin_tls();
        let log = self.log.clone();
        let child = self.child.as_mut().expect("node is running");
        wait_for("node ready", START_DEADLINE, || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "levee-node exited with {status}; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let answer = admin_get(&admin, "/health/ready", tls.clone());
            (answer.is_some_and(|a| a.status == 200)).then_some(())
        });
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL: no chance to flush or finish anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id, while the process runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGSTOP: the process freezes with its sockets open, so peers see
    /// silence rather than refused connections (a hung or paused host).
    /// Pair with [`Stopped`] so a failing test still resumes it.
    pub fn stop(&self) -> Stopped {
        let pid = self.pid().expect("node is running");
        signal(pid, "-STOP");
        Stopped(pid)
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("node is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        wait_for("node exit after SIGTERM", Duration::from_secs(30), || {
            child.try_wait().ok().flatten()
        })
    }

    /// Starts the process again on the same data and addresses.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready();
    }

    /// Starts the process again without waiting for it to be ready.
    pub fn respawn(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGKILL, then starts the process again with `more` flags for this
    /// start only, without waiting for it to be ready.
    pub fn respawn_with(&mut self, more: &[&str]) {
        self.kill();
        self.spawn_with(more);
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A library client for this node.
    pub fn client(&self) -> Client {
        Client::new(ClientConfig {
            endpoints: vec![self.addr.clone()],
            transport: self.transport.clone(),
            ..ClientConfig::default()
        })
    }

    /// `GET path` on this node's admin port, as client "root".
    pub fn admin_get(&self, path: &str) -> Option<admin_http::Answer> {
        admin_get(&self.admin, path, self.transport.admin_tls())
    }

    /// Runs the `levee` CLI against this node.
    pub fn cli(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut command = Command::new(bin("levee"));
        command
            .env_remove("LEVEE_CERTS_DIR")
            .env_remove("LEVEE_INSECURE");
        // The CLI talks to this node the way it was started, unless the
        // test says otherwise.
        let chosen = args
            .iter()
            .any(|a| *a == "--insecure" || *a == "--certs-dir");
        if !chosen {
            match &self.transport {
                Transport::Plain => {
                    command.env("LEVEE_INSECURE", "1");
                }
                Transport::Tls(_) => {
                    let at = self.extra.iter().position(|a| a == "--certs-dir");
                    let dir = at.and_then(|i| self.extra.get(i + 1)).expect("certs dir");
                    command.env("LEVEE_CERTS_DIR", dir);
                }
            }
        }
        let mut child = command
            .args(["--endpoints", &self.addr])
            .args(args)
            .env_remove("LEVEE_ENDPOINTS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn levee");
        let mut input = child.stdin.take().expect("stdin");
        if let Some(bytes) = stdin {
            input.write_all(bytes).expect("write stdin");
        }
        drop(input);
        child.wait_with_output().expect("levee output")
    }
}

/// A node frozen by [`TestNode::stop`]; dropping this resumes it
/// (SIGCONT), also when a test panics.
#[must_use = "dropping it resumes the node at once"]
pub struct Stopped(u32);

impl Stopped {
    /// Resumes the node now.
    pub fn resume(self) {}
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // The process may be gone already (killed by the test); nothing
        // to resume then.
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid} failed");
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A tokio runtime for driving the async client from a plain test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
