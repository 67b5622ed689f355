//! A checker for a whole `/metrics` text, in the spirit of `promtool
//! check metrics`: the format (every family with its `# HELP` and `#
//! TYPE` before its samples, labels and values that parse) and the
//! naming rules levee follows (<https://prometheus.io/docs/practices/naming/>):
//! `_total` on counters and only there, base units, no precomputed rates,
//! a unit or a known flag as the last word of every name. The unit tests
//! and the tests through the binary run it on what the node serves.

use std::collections::{BTreeMap, BTreeSet};

/// What a family's name may end with (before `_total`): the base unit it
/// is measured in, or what it counts. A new family whose name ends in
/// none of these is reported, so a name without a unit is a decision, not
/// an accident.
const UNITS: &[&str] = &[
    // Base units.
    "seconds",
    "bytes",
    "ratio", // `_info`: a constant 1 whose labels carry the values.
    "info",  // What is counted.
    "requests",
    "panics",
    "partitions",
    "moves",
    "nodes",
    "shapes",
    "shards",
    "fds",
    "connections",
    "records",
    "tasks",
    "syncs",
    "segments",
    // 0/1 flags, named for the condition they report.
    "enabled",
    "restart",
];

/// Name parts that are not base units (Prometheus wants seconds and
/// bytes, scaled by the reader).
const NON_BASE_UNITS: &[&str] = &[
    "ms",
    "us",
    "ns",
    "millis",
    "milliseconds",
    "microseconds",
    "nanoseconds",
    "minutes",
    "hours",
    "days",
    "kb",
    "mb",
    "gb",
    "kib",
    "mib",
    "gib",
    "kilobytes",
    "megabytes",
    "gigabytes",
    "percent",
];

/// Endings of a rate computed by the exporter, where a counter and
/// `rate()` belong.
const RATE_SUFFIXES: &[&str] = &["_per_sec", "_per_second", "_per_s", "_rate", "_ps"];

/// A family as its `# TYPE` declared it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Counter,
    Gauge,
    Histogram,
    Other,
}

#[derive(Debug, Default)]
struct Family {
    help: bool,
    kind: Option<Type>,
    samples: usize,
    /// Histogram only: which of `_bucket` (with `le="+Inf"`), `_sum`,
    /// `_count` were seen.
    inf_bucket: bool,
    sum: bool,
    count: bool,
}

/// The problems found in `text`, one line each; empty when it passes.
pub fn lint(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut closed: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let at = n + 1;
        if line.is_empty() {
            continue;
        }
        let header = [("# HELP ", false), ("# TYPE ", true)]
            .into_iter()
            .find_map(|(prefix, is_type)| Some((line.strip_prefix(prefix)?, is_type)));
        if let Some((rest, is_type)) = header {
            let mut words = rest.split(' ');
            let name = words.next().unwrap_or_default();
            open(
                &mut families,
                &mut closed,
                &mut current,
                name,
                at,
                &mut problems,
            );
            let Some(f) = families.get_mut(name) else {
                continue;
            };
            if !is_type {
                if f.help {
                    problems.push(format!("line {at}: second # HELP for {name}"));
                }
                f.help = true;
                continue;
            }
            if f.kind.is_some() || f.samples > 0 {
                problems.push(format!("line {at}: # TYPE for {name} is late or repeated"));
            }
            f.kind = Some(match words.next() {
                Some("counter") => Type::Counter,
                Some("gauge") => Type::Gauge,
                Some("histogram") => Type::Histogram,
                _ => Type::Other,
            });
        } else if line.starts_with('#') {
            continue;
        } else {
            sample(line, at, &mut families, current.as_deref(), &mut problems);
        }
    }
    for (name, f) in &families {
        check_family(name, f, &mut problems);
    }
    problems
}

/// Starts `name`'s metadata block, or continues it; a family whose block
/// was left before may not come back.
fn open(
    families: &mut BTreeMap<String, Family>,
    closed: &mut BTreeSet<String>,
    current: &mut Option<String>,
    name: &str,
    at: usize,
    problems: &mut Vec<String>,
) {
    if current.as_deref() == Some(name) {
        return;
    }
    if let Some(previous) = current.take() {
        closed.insert(previous);
    }
    if closed.contains(name) || families.contains_key(name) {
        problems.push(format!("line {at}: {name} is declared twice"));
    }
    if !valid_name(name) {
        problems.push(format!("line {at}: {name:?} is not a metric name"));
    }
    families.entry(name.to_owned()).or_default();
    *current = Some(name.to_owned());
}

fn sample(
    line: &str,
    at: usize,
    families: &mut BTreeMap<String, Family>,
    current: Option<&str>,
    problems: &mut Vec<String>,
) {
    let Some((series, labels, value)) = split_sample(line) else {
        problems.push(format!("line {at}: cannot read {line:?}"));
        return;
    };
    let Some(family_name) = current.filter(|f| belongs(series, f, families)) else {
        problems.push(format!(
            "line {at}: sample {series} outside its family's # TYPE block"
        ));
        return;
    };
    let Some(family) = families.get_mut(family_name) else {
        return;
    };
    family.samples += 1;
    if value.is_none() {
        problems.push(format!("line {at}: the value of {series} is not a number"));
    }
    let Some(labels) = labels else {
        problems.push(format!("line {at}: the labels of {series} do not parse"));
        return;
    };
    if family.kind == Some(Type::Histogram) {
        match series.strip_prefix(family_name).unwrap_or_default() {
            "_bucket" if labels.get("le").map(String::as_str) == Some("+Inf") => {
                family.inf_bucket = true
            }
            "_bucket" if !labels.contains_key("le") => {
                problems.push(format!("line {at}: a bucket of {family_name} without le"))
            }
            "_sum" => family.sum = true,
            "_count" => family.count = true,
            _ => {}
        }
    }
}

/// Whether sample `series` is one of family `family`'s: the same name, or
/// for a histogram the name plus one of its suffixes.
fn belongs(series: &str, family: &str, families: &BTreeMap<String, Family>) -> bool {
    if series == family {
        return families.get(family).map(|f| f.kind) != Some(Some(Type::Histogram));
    }
    let histogram = families.get(family).map(|f| f.kind) == Some(Some(Type::Histogram));
    histogram
        && series
            .strip_prefix(family)
            .is_some_and(|s| matches!(s, "_bucket" | "_sum" | "_count"))
}

/// A sample line read: the series name, its labels (None if they do not
/// parse) and its value (None if it is not a number).
type Read<'a> = (&'a str, Option<BTreeMap<String, String>>, Option<f64>);

/// `name{labels} value`, split; None if there is no value at all.
fn split_sample(line: &str) -> Option<Read<'_>> {
    let (series, rest) = match line.find('{') {
        Some(brace) => {
            let (name, rest) = line.split_at(brace);
            let (labels, after) = parse_labels(rest.get(1..)?);
            (name, labels.map(|l| (l, after)))
        }
        None => {
            let (name, value) = line.split_once(' ')?;
            (name, Some((BTreeMap::new(), value)))
        }
    };
    let Some((labels, value)) = rest else {
        return Some((series, None, None));
    };
    // A timestamp may follow the value; levee writes none.
    let value = value.trim().split(' ').next().and_then(parse_value);
    Some((series, Some(labels), value))
}

/// Parses `k="v",...}` and returns the labels and what follows the brace.
fn parse_labels(text: &str) -> (Option<BTreeMap<String, String>>, &str) {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return (Some(labels), after);
        }
        let Some((key, after_eq)) = rest.split_once("=\"") else {
            return (None, "");
        };
        let mut value = String::new();
        let mut chars = after_eq.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => return (None, ""),
                },
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                '\n' => return (None, ""),
                c => value.push(c),
            }
        }
        let Some(end) = end else {
            return (None, "");
        };
        if !valid_name(key) || labels.insert(key.to_owned(), value).is_some() {
            return (None, "");
        }
        rest = after_eq.get(end..).unwrap_or_default();
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The naming rules, and what a family must hold.
fn check_family(name: &str, f: &Family, problems: &mut Vec<String>) {
    if !f.help {
        problems.push(format!("{name} has no # HELP"));
    }
    let Some(kind) = f.kind else {
        problems.push(format!("{name} has no # TYPE"));
        return;
    };
    let counter = kind == Type::Counter;
    if counter != name.ends_with("_total") {
        problems.push(format!(
            "{name}: `_total` belongs on counters, and only there"
        ));
    }
    if let Some(suffix) = RATE_SUFFIXES.iter().find(|s| name.ends_with(**s)) {
        problems.push(format!(
            "{name} ends in {suffix}: export a counter and let rate() compute it"
        ));
    }
    let words: Vec<&str> = name.split('_').collect();
    if let Some(unit) = words.iter().find(|w| NON_BASE_UNITS.contains(w)) {
        problems.push(format!(
            "{name} is in {unit}: use the base unit (seconds, bytes, ratio)"
        ));
    }
    let last = name.strip_suffix("_total").unwrap_or(name);
    if !UNITS.iter().any(|u| last.ends_with(&format!("_{u}"))) {
        problems.push(format!(
            "{name} names no unit: end it in one of {UNITS:?} (or add a unit here)"
        ));
    }
    if kind == Type::Histogram && f.samples > 0 && !(f.inf_bucket && f.sum && f.count) {
        problems.push(format!(
            "histogram {name} lacks its +Inf bucket, _sum or _count"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# HELP levee_x_requests_total X.\n\
                        # TYPE levee_x_requests_total counter\n\
                        levee_x_requests_total{op=\"a \\\"b\\\"\"} 3\n\
                        # HELP levee_y_seconds Y.\n\
                        # TYPE levee_y_seconds histogram\n\
                        levee_y_seconds_bucket{le=\"0.1\"} 1\n\
                        levee_y_seconds_bucket{le=\"+Inf\"} 2\n\
                        levee_y_seconds_sum 0.3\n\
                        levee_y_seconds_count 2\n";

    #[test]
    fn a_well_formed_exposition_passes() {
        assert_eq!(lint(GOOD), Vec::<String>::new());
    }

    #[test]
    fn each_broken_rule_is_reported() {
        let cases = [
            ("levee_a_bytes 1\n", "outside its family"),
            (
                "# TYPE levee_a_bytes gauge\nlevee_a_bytes 1\n",
                "has no # HELP",
            ),
            (
                "# HELP levee_a_bytes A.\nlevee_a_bytes 1\n",
                "has no # TYPE",
            ),
            (
                "# HELP levee_a_bytes A.\n# TYPE levee_a_bytes counter\nlevee_a_bytes 1\n",
                "`_total` belongs on counters",
            ),
            (
                "# HELP levee_a_bytes_total A.\n# TYPE levee_a_bytes_total gauge\nlevee_a_bytes_total 1\n",
                "`_total` belongs on counters",
            ),
            (
                "# HELP levee_a_bytes_per_sec A.\n# TYPE levee_a_bytes_per_sec gauge\nlevee_a_bytes_per_sec 1\n",
                "rate()",
            ),
            (
                "# HELP levee_a_ms A.\n# TYPE levee_a_ms gauge\nlevee_a_ms 1\n",
                "base unit",
            ),
            (
                "# HELP levee_inflight A.\n# TYPE levee_inflight gauge\nlevee_inflight 1\n",
                "names no unit",
            ),
            (
                "# HELP levee_a_bytes A.\n# TYPE levee_a_bytes gauge\nlevee_a_bytes{x=\"1} 1\n",
                "labels of levee_a_bytes do not parse",
            ),
            (
                "# HELP levee_a_bytes A.\n# TYPE levee_a_bytes gauge\nlevee_a_bytes one\n",
                "not a number",
            ),
            (
                "# HELP levee_h_seconds H.\n# TYPE levee_h_seconds histogram\nlevee_h_seconds_bucket{le=\"1\"} 1\n",
                "lacks its +Inf bucket",
            ),
            (
                "# HELP levee_a_bytes A.\n# TYPE levee_a_bytes gauge\nlevee_a_bytes 1\n\
                 # HELP levee_b_bytes B.\n# TYPE levee_b_bytes gauge\n\
                 # HELP levee_a_bytes A.\n",
                "declared twice",
            ),
        ];
        for (text, expected) in cases {
            let problems = lint(text);
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{text:?}: expected {expected:?} in {problems:?}"
            );
        }
    }
}
