//! Bulk writes: `levee put --from-dir DIR` and `levee load FILE.jsonl`.
//! Inputs become puts, at most `--concurrency` in flight; a progress bar
//! on stderr when it is a terminal; an input that cannot be stored is
//! reported (by its path or line number) and counted, and the rest go on;
//! a one-line summary at the end, always.

pub mod dir;
pub mod jsonl;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use levee_node::client::Client;
use levee_node::proto::Limits;
use tokio::task::JoinSet;

/// The flags every bulk command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct BulkArgs {
    /// Puts in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
}

/// One input: a put to make, or why it cannot be one.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// Store `value` under `key`; `what` names the input in reports.
    Put {
        /// A path or `line N`.
        what: String,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Not stored, for this reason.
    Bad {
        /// A path or `line N`.
        what: String,
        /// Why, for the operator.
        error: String,
        /// Over `max_value_bytes` (counted apart in the summary).
        too_large: bool,
    },
}

impl Input {
    /// A put, or a refusal naming the limit when the value is over it
    /// (the client would refuse it too, with less context).
    pub fn put(what: String, key: Vec<u8>, value: Vec<u8>, limits: &Limits) -> Self {
        match limits.value(&value) {
            Ok(()) => Input::Put { what, key, value },
            Err(e) => Input::Bad {
                what,
                error: format!("{e}; not stored"),
                too_large: true,
            },
        }
    }
}

/// What a bulk command did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Puts that succeeded.
    pub written: u64,
    /// Inputs not stored (bad lines, unreadable or oversize files, failed
    /// puts).
    pub failed: u64,
    /// Of `failed`, those over the value limit.
    pub too_large: u64,
    /// Value bytes written.
    pub bytes: u64,
    /// From the first input to the last answer.
    pub elapsed: Duration,
}

impl Summary {
    /// `written 120 (1.2 MiB), failed 2 (1 too large), in 0.8s`.
    pub fn line(&self) -> String {
        let large = if self.too_large > 0 {
            format!(" ({} too large)", self.too_large)
        } else {
            String::new()
        };
        format!(
            "written {} ({}), failed {}{large}, in {:.1}s",
            self.written,
            ByteSize(self.bytes),
            self.failed,
            self.elapsed.as_secs_f64()
        )
    }

    /// The same as JSON numbers.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "written": self.written,
            "failed": self.failed,
            "too_large": self.too_large,
            "bytes": self.bytes,
            "elapsed_ms": u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX),
        })
    }
}

/// Stores the inputs, at most `concurrency` puts at once, reporting each
/// failure on stderr as it happens. `total` (if known) sizes the bar.
pub async fn run(
    client: Arc<Client>,
    inputs: impl Iterator<Item = Input>,
    total: Option<u64>,
    concurrency: usize,
) -> Summary {
    let started = Instant::now();
    let bar = progress(total);
    let mut summary = Summary::default();
    let mut running = JoinSet::new();
    for input in inputs {
        // Only `concurrency` values are held at a time: the next input is
        // read only when a put has finished.
        while running.len() >= concurrency.max(1) {
            if let Some(done) = running.join_next().await {
                settle(&mut summary, &bar, done);
            }
        }
        match input {
            Input::Put { what, key, value } => {
                let client = client.clone();
                running.spawn(async move {
                    let result = client.put(&key, &value).await.map(|_| value.len());
                    (what, result)
                });
            }
            Input::Bad {
                what,
                error,
                too_large,
            } => {
                summary.failed += 1;
                summary.too_large += u64::from(too_large);
                report(&bar, &what, &error);
                bar.inc(1);
            }
        }
    }
    while let Some(done) = running.join_next().await {
        settle(&mut summary, &bar, done);
    }
    bar.finish_and_clear();
    summary.elapsed = started.elapsed();
    summary
}

type Done =
    Result<(String, Result<usize, levee_node::client::ClientError>), tokio::task::JoinError>;

fn settle(summary: &mut Summary, bar: &ProgressBar, done: Done) {
    match done {
        Ok((_, Ok(bytes))) => {
            summary.written += 1;
            summary.bytes += bytes as u64;
        }
        Ok((what, Err(e))) => {
            summary.failed += 1;
            report(bar, &what, &e.to_string());
        }
        Err(e) => {
            summary.failed += 1;
            report(bar, "a put", &e.to_string());
        }
    }
    bar.inc(1);
}

/// One failure, on stderr above the bar (the bar hides while it prints).
fn report(bar: &ProgressBar, what: &str, error: &str) {
    bar.suspend(|| eprintln!("levee: {what}: {error}"));
}

/// A bar (count, rate, ETA) when stderr is a terminal; hidden otherwise,
/// so logs and pipes get only the reports and the summary.
fn progress(total: Option<u64>) -> ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(n) => (
            ProgressBar::new(n),
            "{bar:30} {pos}/{len}  {rate}  ETA {eta}",
        ),
        None => (ProgressBar::no_length(), "{spinner} {pos}  {rate}"),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        // indicatif's own {per_sec} shows four decimals of a key count.
        .with_key(
            "rate",
            |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = write!(out, "{:.0} keys/s", state.per_sec());
            },
        );
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversize_value_is_refused_with_the_limit_named() {
        let limits = Limits {
            max_value_bytes: 4,
            ..Limits::default()
        };
        let small = Input::put("a".into(), b"a".to_vec(), b"1234".to_vec(), &limits);
        assert!(matches!(small, Input::Put { .. }));
        let Input::Bad {
            error, too_large, ..
        } = Input::put("b".into(), b"b".to_vec(), b"12345".to_vec(), &limits)
        else {
            panic!("an oversize value became a put");
        };
        assert!(too_large);
        assert!(error.contains("max_value_bytes"), "{error}");
    }

    #[test]
    fn the_summary_counts_what_was_refused_for_size() {
        let summary = Summary {
            written: 3,
            failed: 2,
            too_large: 1,
            bytes: 2048,
            elapsed: Duration::from_millis(1500),
        };
        let line = summary.line();
        assert!(line.starts_with("written 3 ("), "{line}");
        assert!(line.contains("failed 2 (1 too large)"), "{line}");
        assert_eq!(summary.json()["elapsed_ms"], 1500);
    }
}
