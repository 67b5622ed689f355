//! `levee`: the levee command-line client.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use levee_node::client::{Client, ClientConfig, WriteOutcome};
use levee_node::storage::Version;
use levee_node::tls::{Credentials, Transport};

mod admin;
mod bench;
mod bulk;
mod cert;
mod endpoint;
mod health;
mod local;
mod scan;
mod status;

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  error (unreachable node, timeout, refused request, ...); for put
     --from-dir and load, any input not stored
  2  usage error
  3  key not found (get, delete)
levee status --check:
  0  HEALTH_OK
  1  HEALTH_WARN
  2  HEALTH_ERR, or no node answered";

/// Command-line client for levee, a replicated key-value block store.
#[derive(Debug, Parser)]
#[command(name = "levee", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// Nodes to contact, comma-separated HOST:PORT.
    #[arg(
        long,
        env = "LEVEE_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7400",
        global = true
    )]
    endpoints: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
    /// Per-request timeout (5s, 500ms; a bare number is ms).
    #[arg(
        long,
        env = "LEVEE_TIMEOUT_MS",
        default_value = "5000",
        value_name = "DURATION",
        value_parser = levee_node::units::parse_millis,
        global = true
    )]
    timeout_ms: u64,
    /// Connect timeout (2s; a bare number is ms), never more than
    /// --timeout-ms.
    #[arg(
        long,
        env = "LEVEE_CONNECT_TIMEOUT_MS",
        default_value = "2000",
        value_name = "DURATION",
        value_parser = levee_node::units::parse_millis,
        global = true
    )]
    connect_timeout_ms: u64,
    /// Directory with ca.crt and this client's pair (client.USER.crt and
    /// .key, from `levee cert`): talk mutual TLS. For `levee cert`, where
    /// certificates are written; for `levee local`, the nodes' too.
    #[arg(
        long,
        env = "LEVEE_CERTS_DIR",
        value_name = "DIR",
        global = true,
        conflicts_with = "insecure"
    )]
    certs_dir: Option<PathBuf>,
    /// Talk plaintext, to a cluster started with --insecure.
    // Falsey parsing so `LEVEE_INSECURE=1` (or `yes`, `on`) works, as
    // the README and `levee local` print it.
    #[arg(
        long,
        env = "LEVEE_INSECURE",
        global = true,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    insecure: bool,
    /// Whose client certificate to present (client.USER.crt).
    #[arg(long, env = "LEVEE_USER", default_value = "root", global = true)]
    user: String,
    #[command(subcommand)]
    command: Command,
}

/// `levee endpoint ...`.
#[derive(Debug, Subcommand)]
enum EndpointCommand {
    /// One row per node, from the node itself: build, uptime, data on
    /// disk, hints held, concurrency limit, Raft term and index, the
    /// leader it follows; exits 1 if a node does not answer.
    Status,
}

/// Output format of every command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Store a value: from VALUE, from --file, or from stdin when neither;
    /// or, with --from-dir, every file of a directory.
    Put {
        /// The key.
        #[arg(required_unless_present = "from_dir")]
        key: Option<String>,
        /// The value (as UTF-8 bytes).
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long, short = 'f', conflicts_with = "value")]
        file: Option<PathBuf>,
        /// Store every regular file under DIR, each under its path
        /// relative to DIR (DIR/site/a.css → site/a.css); symbolic links
        /// are not followed. A file over the value limit is reported and
        /// skipped; the exit code is 1 if any file was not stored.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["key", "value", "file"])]
        from_dir: Option<PathBuf>,
        #[command(flatten)]
        bulk: bulk::BulkArgs,
    },
    /// Store the keys of a JSON-lines file (- for stdin): one
    /// {"key": "...", "value": "..."} object per line ("value_base64"
    /// instead of "value" for bytes). A bad line is reported with its
    /// number and skipped, the others are stored; the exit code is 1 if
    /// any line was not stored.
    Load {
        /// The file.
        file: PathBuf,
        #[command(flatten)]
        bulk: bulk::BulkArgs,
    },
    /// List the keys that start with PREFIX (every key without one), at
    /// most --limit; from one replica per partition, not a quorum read.
    #[command(after_help = scan::NOT_A_QUORUM_READ)]
    Keys(scan::Args),
    /// List the keys that start with PREFIX with their values (key, tab,
    /// value), at most --limit; from one replica per partition, not a
    /// quorum read.
    #[command(after_help = scan::NOT_A_QUORUM_READ)]
    Scan(scan::Args),
    /// Print a value's raw bytes to stdout (or to --out).
    Get {
        /// The key.
        key: String,
        /// Write the value to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Read only this node's copy (no quorum, no repair), to see what
        /// each replica holds.
        #[arg(long, value_name = "NODE_ID")]
        from: Option<u64>,
    },
    /// Delete a key; exits 3 if it did not exist (it is deleted either
    /// way, so running it twice is harmless).
    Delete {
        /// The key.
        key: String,
    },
    /// Show the cluster: nodes, zones, states, roles, partitions, and
    /// its health with what to do (--check: the health only, as an exit
    /// code).
    Status(status::Args),
    /// Every node asked directly, a row each (`levee endpoint status`):
    /// version, uptime, data, hints, limit, Raft term and index.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Operator changes: drain a node, change recovery settings, noout.
    #[command(subcommand)]
    Admin(admin::Admin),
    /// Certificates: create the CA, node and client pairs; list; rotate.
    Cert {
        /// The CA's key (default: CERTS_DIR/ca.key); keep it off the nodes.
        #[arg(long, env = "LEVEE_CA_KEY", value_name = "FILE", global = true)]
        ca_key: Option<PathBuf>,
        #[command(subcommand)]
        command: cert::Cert,
    },
    /// Run a local cluster of levee-node processes on 127.0.0.x until
    /// Ctrl-C; a second run on the same directory restarts it with its
    /// data. `levee local ctl kill|stop|pause|resume|start N` acts on one
    /// node of a running one.
    Local(local::Args),
    /// Run a benchmark scenario (cluster, open-loop load, faults) and write
    /// result.json, summary.md and timeline.png.
    Bench(bench::Args),
    /// Simulate recovery at scale (benches/sim/, e.g. 1,000 nodes) with the
    /// node's own detector, checker, placement and budgets on simulated
    /// time; write result.json, summary.md and sim.png.
    Sim(bench::Args),
    /// Print a shell completion script: `levee completions bash >
    /// /etc/bash_completion.d/levee` (or zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print levee's man page (roff): `levee man > levee.1; man ./levee.1`.
    Man,
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`levee status | head`), as command-line
    // tools do, instead of panicking in println!.
    // SAFETY: called first thing, before any thread exists; SIG_DFL is a
    // valid disposition for SIGPIPE.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    let cli = Cli::parse();
    // Every command but bench and sim (another process) is one request:
    // one thread.
    match cli.command {
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "levee", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            return match clap_mangen::Man::new(command).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(cli.output, &e.into(), 1),
            };
        }
        Command::Bench(ref args) => return bench::forward(None, args),
        Command::Sim(ref args) => return bench::forward(Some("sim"), args),
        Command::Cert { ca_key, command } => {
            return match cert::run(command, cli.certs_dir.as_deref(), ca_key, cli.output) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(cli.output, &e, 1),
            };
        }
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("levee: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // `status --check` answers with its exit code: no answer at all is
    // as bad as HEALTH_ERR.
    let failed = match &cli.command {
        Command::Status(args) if args.check => 2,
        _ => 1,
    };
    let output = cli.output;
    match runtime.block_on(run(cli)) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::NotFound) => ExitCode::from(3),
        Ok(Outcome::Exit(code)) => ExitCode::from(code),
        Err(e) => fail(output, &e, failed),
    }
}

/// Reports an error, as `{"error": "..."}` on stdout too under `-o json`
/// (a script reading stdout gets JSON whatever happened), and exits.
fn fail(output: Output, e: &anyhow::Error, code: u8) -> ExitCode {
    if output == Output::Json {
        println!("{}", serde_json::json!({"error": format!("{e:#}")}));
    }
    eprintln!("levee: {e:#}");
    ExitCode::from(code)
}

enum Outcome {
    Done,
    NotFound,
    Exit(u8),
}

/// How this client talks to the cluster: mutual TLS with its certificate,
/// or plaintext only when asked for by name.
fn transport(cli: &Cli) -> anyhow::Result<Transport> {
    match (&cli.certs_dir, cli.insecure) {
        (Some(dir), _) => {
            let credentials = Credentials::client(dir, &cli.user).with_context(|| {
                format!(
                    "cannot load client {:?}'s certificate from {} (create it with `levee cert create-client {}`)",
                    cli.user,
                    dir.display(),
                    cli.user
                )
            })?;
            Ok(Transport::Tls(credentials))
        }
        (None, true) => Ok(Transport::Plain),
        (None, false) => anyhow::bail!(
            "no certificates: pass --certs-dir DIR (or LEVEE_CERTS_DIR; it holds ca.crt and client.{}.crt/.key from `levee cert`), or --insecure (LEVEE_INSECURE=1) for a cluster started with --insecure",
            cli.user
        ),
    }
}

async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    if let Command::Local(args) = cli.command {
        local::run(args, cli.certs_dir, cli.output).await?;
        return Ok(Outcome::Done);
    }
    let client = Arc::new(Client::new(ClientConfig {
        endpoints: cli.endpoints.clone(),
        // A connect cannot take longer than the whole request may.
        connect_timeout: Duration::from_millis(cli.connect_timeout_ms.min(cli.timeout_ms)),
        request_timeout: Duration::from_millis(cli.timeout_ms),
        transport: transport(&cli)?,
        ..ClientConfig::default()
    }));
    match cli.command {
        Command::Put {
            from_dir: Some(dir),
            bulk,
            ..
        } => {
            let limits = client.config().limits;
            let (files, unreadable) = bulk::dir::walk(&dir)?;
            let total = (files.len() + unreadable.len()) as u64;
            let inputs = unreadable.into_iter().chain(
                files
                    .into_iter()
                    .map(move |rel| bulk::dir::file_input(&dir, &rel, &limits)),
            );
            bulk_done(client, inputs, Some(total), &bulk, cli.output).await
        }
        Command::Load { file, bulk } => {
            let limits = client.config().limits;
            if file.as_os_str() == "-" {
                let inputs = bulk::jsonl::inputs(std::io::stdin().lock(), limits);
                return bulk_done(client, inputs, None, &bulk, cli.output).await;
            }
            let opened = std::fs::File::open(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            // Only the bar's length: without it, the bar counts up alone.
            let total = bulk::jsonl::count_lines(&file).ok();
            let inputs = bulk::jsonl::inputs(std::io::BufReader::new(opened), limits);
            bulk_done(client, inputs, total, &bulk, cli.output).await
        }
        Command::Keys(args) => {
            scan::run(&client, &args, false, cli.output).await?;
            Ok(Outcome::Done)
        }
        Command::Scan(args) => {
            scan::run(&client, &args, true, cli.output).await?;
            Ok(Outcome::Done)
        }
        Command::Put {
            key, value, file, ..
        } => {
            // clap requires the key unless --from-dir, handled above.
            let key = key.context("a key is needed (or --from-dir DIR)")?;
            let value = match (value, file) {
                (Some(v), _) => v.into_bytes(),
                (None, Some(path)) => std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                (None, None) => {
                    let mut buf = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buf)
                        .context("cannot read the value from stdin")?;
                    buf
                }
            };
            let outcome = client.put(key.as_bytes(), &value).await?;
            report_write(cli.output, "put", &key, Some(value.len()), outcome);
            Ok(Outcome::Done)
        }
        Command::Get { key, out, from } => {
            let found = match from {
                Some(node) => client.get_from(node, key.as_bytes()).await?,
                None => client.get(key.as_bytes()).await?,
            };
            let Some(found) = found else {
                if cli.output == Output::Json {
                    println!("{}", serde_json::json!({"key": key, "found": false}));
                }
                eprintln!("levee: key not found: {key}");
                return Ok(Outcome::NotFound);
            };
            match (cli.output, out) {
                (_, Some(path)) => {
                    std::fs::write(&path, &found.value)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    if cli.output == Output::Json {
                        println!("{}", get_json(&key, &found.value, found.version, false));
                    }
                }
                (Output::Json, None) => {
                    println!("{}", get_json(&key, &found.value, found.version, true))
                }
                (Output::Text, None) => {
                    let mut stdout = std::io::stdout().lock();
                    stdout
                        .write_all(&found.value)
                        .context("cannot write to stdout")?;
                    // On a terminal, end the line so the prompt does not
                    // follow the value; into a pipe or file, the exact
                    // bytes.
                    if stdout.is_terminal() && !found.value.ends_with(b"\n") {
                        stdout.write_all(b"\n").context("cannot write to stdout")?;
                    }
                    stdout.flush().context("cannot write to stdout")?;
                }
            }
            Ok(Outcome::Done)
        }
        Command::Status(args) if args.watch => {
            status::watch(client.config().clone(), cli.output, &args).await?;
            Ok(Outcome::Done)
        }
        Command::Status(args) => {
            let health = status::run(client.config().clone(), cli.output, &args).await?;
            Ok(if args.check {
                Outcome::Exit(health.status.exit_code())
            } else {
                Outcome::Done
            })
        }
        Command::Endpoint(EndpointCommand::Status) => {
            let all = endpoint::run(client.config().clone(), cli.output).await?;
            Ok(if all { Outcome::Done } else { Outcome::Exit(1) })
        }
        Command::Admin(admin) => {
            admin::run(&client, admin, cli.output).await?;
            Ok(Outcome::Done)
        }
        Command::Local(_)
        | Command::Bench(_)
        | Command::Sim(_)
        | Command::Cert { .. }
        | Command::Completions { .. }
        | Command::Man => {
            anyhow::bail!("handled before a client is made")
        }
        Command::Delete { key } => {
            // Whether it existed, asked first: a delete writes a tombstone
            // either way, and its answer cannot tell.
            let existed = client.get(key.as_bytes()).await?.is_some();
            let outcome = client.delete(key.as_bytes()).await?;
            if cli.output == Output::Json {
                let mut out = write_json("delete", &key, None, &outcome);
                out["existed"] = existed.into();
                println!("{out}");
            } else {
                report_write(cli.output, "delete", &key, None, outcome);
            }
            if existed {
                Ok(Outcome::Done)
            } else {
                eprintln!("levee: key not found: {key} (nothing to delete)");
                Ok(Outcome::NotFound)
            }
        }
    }
}

/// Runs a bulk command and prints its summary (JSON on stdout under
/// `-o json`, else a line on stderr beside the reports); exits 1 if any
/// input was not stored.
async fn bulk_done(
    client: Arc<Client>,
    inputs: impl Iterator<Item = bulk::Input>,
    total: Option<u64>,
    args: &bulk::BulkArgs,
    output: Output,
) -> anyhow::Result<Outcome> {
    let summary = bulk::run(client, inputs, total, usize::from(args.concurrency)).await;
    match output {
        Output::Json => println!("{}", summary.json()),
        Output::Text => eprintln!("levee: {}", summary.line()),
    }
    Ok(if summary.failed > 0 {
        Outcome::Exit(1)
    } else {
        Outcome::Done
    })
}

fn version_json(v: Version) -> serde_json::Value {
    serde_json::json!({"hlc": v.hlc, "writer": v.writer})
}

fn get_json(key: &str, value: &[u8], version: Version, with_value: bool) -> serde_json::Value {
    let mut out = serde_json::json!({
        "key": key,
        "found": true,
        "bytes": value.len(),
        "version": version_json(version),
    });
    if with_value {
        // Text when it is text; otherwise the bytes as a JSON array would be
        // unreadable, so give base16.
        match std::str::from_utf8(value) {
            Ok(s) => out["value"] = s.into(),
            Err(_) => {
                out["value_hex"] = value
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
                    .into()
            }
        }
    }
    out
}

fn write_json(
    op: &str,
    key: &str,
    bytes: Option<usize>,
    outcome: &WriteOutcome,
) -> serde_json::Value {
    let mut out = serde_json::json!({
        "op": op,
        "key": key,
        "applied": outcome.applied,
        "version": version_json(outcome.version),
        "stored_version": version_json(outcome.stored),
    });
    if let Some(n) = bytes {
        out["bytes"] = n.into();
    }
    out
}

fn report_write(output: Output, op: &str, key: &str, bytes: Option<usize>, outcome: WriteOutcome) {
    match output {
        Output::Json => println!("{}", write_json(op, key, bytes, &outcome)),
        Output::Text if !outcome.applied => {
            eprintln!(
                "levee: {op} of {key} not applied: the node holds a newer version ({})",
                outcome.stored
            );
        }
        Output::Text => {}
    }
}
