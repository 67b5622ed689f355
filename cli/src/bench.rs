//! `levee bench …` and `levee sim …`: the scenario runner and the recovery
//! simulator are their own crate and binary (`benches/runner/`,
//! `levee-bench`), so the operator's CLI does not carry a benchmark
//! framework; this forwards the arguments to the `levee-bench` found
//! beside this executable (`levee-bench sim …` for `levee sim`) and
//! returns its exit code.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// Arguments of `levee bench`, passed through untouched (`levee bench
/// --help` shows the runner's own help).
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// SCENARIO.toml [--out DIR] [--keep-data] (see `levee bench --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// Runs `levee-bench` with `first` (a subcommand, if any) and the
/// arguments, and waits for it.
pub fn forward(first: Option<&str>, args: &Args) -> ExitCode {
    let runner = match runner() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("levee: {e}");
            return ExitCode::from(1);
        }
    };
    match Command::new(&runner).args(first).args(&args.args).status() {
        Ok(status) => match status.code() {
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            // Killed by a signal: a failure, as a shell would report it.
            None => ExitCode::from(1),
        },
        Err(e) => {
            eprintln!("levee: cannot run {}: {e}", runner.display());
            ExitCode::from(1)
        }
    }
}

fn runner() -> Result<PathBuf, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot locate the levee binary: {e}"))?;
    let sibling = exe.with_file_name("levee-bench");
    if sibling.exists() {
        return Ok(sibling);
    }
    Err(format!(
        "levee-bench not found next to {} (build it with `cargo build --release -p levee-bench`; \
         a plain `cargo build --release` builds it too)",
        exe.display()
    ))
}
