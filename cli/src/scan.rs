//! `levee keys PREFIX` and `levee scan PREFIX`: what is stored, keys only
//! or with values, streamed page by page, at most `--limit` of them.

use std::io::Write;

use anyhow::Context;
use base64::Engine;
use levee_node::client::Client;
use levee_node::proto::ScanEntry;

use crate::Output;

/// What both commands take.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Only keys starting with this (none: every key).
    #[arg(default_value = "")]
    pub prefix: String,
    /// Most keys shown, so a large store does not flood the terminal; the
    /// command says so on stderr when more may match.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: u64,
}

/// Shown on both commands' help.
pub const NOT_A_QUORUM_READ: &str = "\
Each partition is read from one replica, not a quorum: a write that so \
far reached only the other replicas may be missing. Keys come partition \
by partition (sorted within each), not in overall order; pipe through \
`sort` for that. Under -o json, one JSON object per line (JSON lines), \
with \"value\", or \"value_base64\" when the value is not UTF-8: the \
lines `levee load` reads.";

/// Prints the live keys (with their values when `values`) that start
/// with the prefix, as the pages arrive.
pub async fn run(client: &Client, args: &Args, values: bool, output: Output) -> anyhow::Result<()> {
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let mut scan = client.scan(args.prefix.as_bytes(), values, limit);
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    while let Some(page) = scan.next_page().await? {
        for entry in &page {
            let line = match output {
                Output::Json => json(entry, values).to_string(),
                Output::Text => text(entry, values),
            };
            writeln!(stdout, "{line}").context("cannot write to stdout")?;
        }
        // A page at a time, so a slow scan shows its progress.
        stdout.flush().context("cannot write to stdout")?;
    }
    if scan.cut_short() {
        eprintln!(
            "levee: stopped at --limit {}; more keys may match (raise --limit)",
            args.limit
        );
    }
    Ok(())
}

/// `key` or `key<TAB>value`, each shown readably (see [`shown`]).
fn text(entry: &ScanEntry, values: bool) -> String {
    let key = shown(&entry.key);
    match (&entry.value, values) {
        (Some(value), true) => format!("{key}\t{}", shown(value)),
        _ => key,
    }
}

/// Text as it is; control characters and bytes that are not UTF-8
/// escaped (`\n`, `\x00`), so one entry is always one line.
fn shown(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_string(),
        Ok(s) => s.escape_debug().to_string(),
        Err(_) => bytes.escape_ascii().to_string(),
    }
}

/// One JSON line: key, version, and the value as text or base64.
fn json(entry: &ScanEntry, values: bool) -> serde_json::Value {
    let mut out = serde_json::json!({
        "version": {"hlc": entry.version.hlc, "writer": entry.version.writer},
    });
    put_bytes(&mut out, "key", &entry.key);
    if let (Some(value), true) = (&entry.value, values) {
        put_bytes(&mut out, "value", value);
    }
    out
}

/// `name` as a string when the bytes are UTF-8, else `name_base64`.
fn put_bytes(out: &mut serde_json::Value, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => out[name] = s.into(),
        Err(_) => {
            out[format!("{name}_base64")] = base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into();
        }
    }
}

#[cfg(test)]
mod tests {
    use levee_node::storage::Version;

    use super::*;

    fn entry(key: &[u8], value: &[u8]) -> ScanEntry {
        ScanEntry {
            key: key.to_vec(),
            version: Version { hlc: 7, writer: 9 },
            value: Some(value.to_vec()),
        }
    }

    #[test]
    fn one_entry_is_one_line_whatever_its_bytes() {
        assert_eq!(text(&entry(b"a/b", b"hello"), true), "a/b\thello");
        assert_eq!(text(&entry(b"a/b", b"hello"), false), "a/b");
        assert_eq!(text(&entry(b"k", b"two\nlines"), true), "k\ttwo\\nlines");
        assert_eq!(text(&entry(b"k", &[0xff, 0]), true), "k\t\\xff\\x00");
    }

    #[test]
    fn a_json_line_is_what_levee_load_reads() {
        let line = json(&entry(b"k", b"text"), true);
        assert_eq!(line["key"], "k");
        assert_eq!(line["value"], "text");
        assert_eq!(line["version"]["hlc"], 7);
        let binary = json(&entry(b"k", &[0, 255]), true);
        assert_eq!(binary["value_base64"], "AP8=");
        let (key, value) = crate::bulk::jsonl::parse_line(
            &serde_json::to_vec(&serde_json::json!({
                "key": binary["key"],
                "value_base64": binary["value_base64"],
            }))
            .unwrap(),
        )
        .unwrap();
        assert_eq!((key, value), (b"k".to_vec(), vec![0, 255]));
        assert!(json(&entry(b"k", b"v"), false).get("value").is_none());
    }
}
