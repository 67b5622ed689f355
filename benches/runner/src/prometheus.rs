//! Reading a node's `GET /metrics` (the Prometheus text format): sample
//! lines, sums over labels, and histograms with the quantile estimate
//! Prometheus' own `histogram_quantile` makes. Pure: the text comes in,
//! numbers come out; fetching it is in `server_figures.rs`.

use std::collections::BTreeMap;

/// One sample line: `name{label="value",...} number`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (for a histogram, with its `_bucket` / `_sum` /
    /// `_count` suffix).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// The samples of one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// In the order of the text.
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parses an exposition; comment lines and lines it cannot read are
    /// skipped (a figure that depends on them is then missing, not wrong).
    pub fn parse(text: &str) -> Self {
        Self {
            samples: text.lines().filter_map(parse_line).collect(),
        }
    }

    /// The sum of `name` over every sample whose labels include `filter`.
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name && matches_labels(s, filter))
            .map(|s| s.value)
            .sum()
    }

    /// Per value of `label`, the sum of `name`.
    pub fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.samples.iter().filter(|s| s.name == name) {
            if let Some(v) = s.labels.get(label) {
                *out.entry(v.clone()).or_insert(0.0) += s.value;
            }
        }
        out
    }

    /// The histogram `name` (its `name_bucket` lines), summed over any
    /// labels other than `le`.
    pub fn histogram(&self, name: &str) -> Histogram {
        self.histogram_where(name, &[])
    }

    /// The histogram `name` over the series whose labels include `filter`
    /// (e.g. one request class), summed over the other labels.
    pub fn histogram_where(&self, name: &str, filter: &[(&str, &str)]) -> Histogram {
        let bucket = format!("{name}_bucket");
        let mut h = Histogram::default();
        let series = self.samples.iter();
        for s in series.filter(|s| s.name == bucket && matches_labels(s, filter)) {
            if let Some(le) = s.labels.get("le").and_then(|le| parse_number(le)) {
                h.add_bucket(le, s.value);
            }
        }
        h
    }
}

fn matches_labels(sample: &Sample, filter: &[(&str, &str)]) -> bool {
    filter
        .iter()
        .all(|(k, v)| sample.labels.get(*k).is_some_and(|x| x == v))
}

/// A number as the format writes it (`+Inf`, `NaN` included).
fn parse_number(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line[open..].find('}')? + open;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let (name, rest) = line.split_once(char::is_whitespace)?;
            (name, BTreeMap::new(), rest)
        }
    };
    // A timestamp may follow the value; it is not needed.
    let value = parse_number(rest.split_whitespace().next()?)?;
    Some(Sample {
        name: name.trim().to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y"`; escaped quotes and backslashes inside values are
/// unescaped.
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => value.push(match chars.next()?.1 {
                    'n' => '\n',
                    c => c,
                }),
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        rest = after[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(labels)
}

/// A cumulative histogram: `(upper bound, observations ≤ bound)`, bounds
/// ascending, the last one `+Inf` (the total).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Buckets in ascending order of bound.
    pub buckets: Vec<(f64, f64)>,
}

impl Histogram {
    /// Adds `count` to the bucket with bound `le` (creating it).
    fn add_bucket(&mut self, le: f64, count: f64) {
        match self.buckets.iter_mut().find(|(b, _)| *b == le) {
            Some((_, c)) => *c += count,
            None => {
                self.buckets.push((le, count));
                self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
    }

    /// Adds another histogram with the same bounds (another node's).
    pub fn merge(&mut self, other: &Histogram) {
        for &(le, count) in &other.buckets {
            self.add_bucket(le, count);
        }
    }

    /// The observations made since `earlier` (a scrape of the same
    /// histogram taken before): per bucket, the difference.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let before = |le: f64| {
            earlier
                .buckets
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0.0, |(_, c)| *c)
        };
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|&(le, c)| (le, (c - before(le)).max(0.0)))
                .collect(),
        }
    }

    /// Observations in all.
    pub fn count(&self) -> f64 {
        self.buckets.last().map_or(0.0, |(_, c)| *c)
    }

    /// The `q` quantile as Prometheus' `histogram_quantile` estimates it:
    /// linear inside the bucket that holds it (from 0 for the first), the
    /// highest finite bound if it falls in `+Inf`. `None` without
    /// observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(le, cumulative) in &self.buckets {
            if cumulative >= rank && cumulative > lower.1 {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let share = (rank - lower.1) / (cumulative - lower.1);
                return Some(lower.0 + (le - lower.0) * share);
            }
            lower = (le, cumulative);
        }
        Some(lower.0)
    }

    /// The share of observations at most `bound`, when `bound` is one of
    /// the bucket bounds (so the answer is exact, not estimated).
    pub fn share_within(&self, bound: f64) -> Option<f64> {
        let total = self.count();
        let (_, within) = self
            .buckets
            .iter()
            .find(|(le, _)| (le - bound).abs() <= bound * 1e-9)?;
        (total > 0.0).then(|| within / total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP levee_shed_requests_total Requests refused.
# TYPE levee_shed_requests_total counter
levee_shed_requests_total{reason="queue_full"} 7
levee_shed_requests_total{reason="queue_timeout"} 3
levee_deadline_dropped_requests_total 2
levee_requests_total{class="foreground",op="get",outcome="ok"} 90
levee_requests_total{class="foreground",op="put",outcome="ok"} 10
levee_requests_total{class="control",op="raft",outcome="ok"} 1000
levee_refusal_duration_seconds_bucket{le="0.00001"} 50
levee_refusal_duration_seconds_bucket{le="0.00005"} 99
levee_refusal_duration_seconds_bucket{le="0.0001"} 100
levee_refusal_duration_seconds_bucket{le="+Inf"} 100
levee_refusal_duration_seconds_sum 0.002
levee_refusal_duration_seconds_count 100
odd{a="x \"quoted\" y",b="z"} 1.5 1700000000
not a sample line
"#;

    #[test]
    fn samples_labels_and_sums() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.sum("levee_shed_requests_total", &[]), 10.0);
        assert_eq!(s.sum("levee_deadline_dropped_requests_total", &[]), 2.0);
        assert_eq!(
            s.sum("levee_requests_total", &[("class", "foreground")]),
            100.0
        );
        let by = s.by_label("levee_shed_requests_total", "reason");
        assert_eq!(by["queue_full"], 7.0);
        let odd = s.samples.iter().find(|x| x.name == "odd").unwrap();
        assert_eq!(odd.labels["a"], "x \"quoted\" y");
        assert_eq!(odd.labels["b"], "z");
        assert_eq!(odd.value, 1.5);
        assert_eq!(s.sum("missing", &[]), 0.0);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_like_prometheus() {
        let h = Scrape::parse(TEXT).histogram("levee_refusal_duration_seconds");
        assert_eq!(h.count(), 100.0);
        // Rank 50 is the top of the first bucket.
        assert!((h.quantile(0.5).unwrap() - 10e-6).abs() < 1e-12);
        // Rank 99: the top of the 10–50 µs bucket.
        assert!((h.quantile(0.99).unwrap() - 50e-6).abs() < 1e-12);
        // Rank 75: 25 of the 49 in 10–50 µs.
        let p75 = h.quantile(0.75).unwrap();
        assert!((p75 - (10e-6 + 40e-6 * 25.0 / 49.0)).abs() < 1e-12, "{p75}");
        assert_eq!(h.share_within(50e-6), Some(0.99));
        assert_eq!(h.share_within(42e-6), None, "not a bound");
        assert_eq!(Histogram::default().quantile(0.99), None);
    }

    #[test]
    fn a_histogram_can_be_one_series_of_several() {
        let text = "h_bucket{class=\"foreground\",le=\"0.001\"} 9\nh_bucket{class=\"foreground\",le=\"+Inf\"} 10\nh_bucket{class=\"control\",le=\"0.001\"} 100\nh_bucket{class=\"control\",le=\"+Inf\"} 100\n";
        let s = Scrape::parse(text);
        assert_eq!(s.histogram("h").count(), 110.0);
        let fg = s.histogram_where("h", &[("class", "foreground")]);
        assert_eq!(fg.buckets, vec![(0.001, 9.0), (f64::INFINITY, 10.0)]);
    }

    #[test]
    fn a_quantile_in_the_inf_bucket_is_the_highest_bound() {
        let mut h = Histogram::default();
        h.add_bucket(1.0, 1.0);
        h.add_bucket(f64::INFINITY, 10.0);
        assert_eq!(h.quantile(0.99), Some(1.0));
    }

    #[test]
    fn histograms_of_a_run_are_differences_and_nodes_add_up() {
        let mut before = Histogram::default();
        before.add_bucket(1e-5, 10.0);
        before.add_bucket(f64::INFINITY, 10.0);
        let mut after = Histogram::default();
        after.add_bucket(1e-5, 12.0);
        after.add_bucket(f64::INFINITY, 30.0);
        let run = after.since(&before);
        assert_eq!(run.buckets, vec![(1e-5, 2.0), (f64::INFINITY, 20.0)]);
        let mut all = run.clone();
        all.merge(&run);
        assert_eq!(all.count(), 40.0);
        assert_eq!(all.share_within(1e-5), Some(0.1));
    }
}
