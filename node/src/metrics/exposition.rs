//! Writing the Prometheus text format (version 0.0.4): every family opens
//! with its `# HELP` and `# TYPE` lines, label values and help text are
//! escaped, and numbers are written the way Prometheus reads them
//! (`+Inf`, `-Inf`, `NaN`). Every part of `/metrics` goes through here,
//! so none can forget a `# TYPE` or emit a quote unescaped.

use std::fmt::Write;

/// A family's `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets when the process restarts); the name ends in
    /// `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
    /// `_bucket{le}`, `_sum` and `_count` samples.
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A count, written exactly (an `f64` would round past 2^53).
    Int(u64),
    /// A signed whole number.
    Signed(i64),
    /// Anything else.
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Signed(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

/// The text being built for one scrape.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Self {
        Self {
            out: String::with_capacity(16 * 1024),
        }
    }

    /// Opens the family `name`: writes its `# HELP` and `# TYPE`. Its
    /// samples follow through the returned [`Family`].
    pub fn family(&mut self, name: &'static str, kind: Kind, help: &str) -> Family<'_> {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
        Family {
            out: &mut self.out,
            name,
        }
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &'static str, kind: Kind, help: &str, value: impl Into<Value>) {
        self.family(name, kind, help).sample(&[], value);
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// The samples of one family, written right after its `# TYPE`.
#[derive(Debug)]
pub struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    /// One sample of the family.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Into<Value>) {
        self.suffixed("", labels, value.into());
    }

    /// One sample named the family's name plus `suffix` (a histogram's
    /// `_bucket`, `_sum`, `_count`).
    pub fn suffixed(&mut self, suffix: &str, labels: &[(&str, &str)], value: Value) {
        let _ = write!(self.out, "{}{suffix}", self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape_label(val));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        write_value(self.out, value);
        self.out.push('\n');
    }
}

fn write_value(out: &mut String, value: Value) {
    let _ = match value {
        Value::Int(v) => write!(out, "{v}"),
        Value::Signed(v) => write!(out, "{v}"),
        Value::Float(v) if v.is_nan() => write!(out, "NaN"),
        Value::Float(v) if v == f64::INFINITY => write!(out, "+Inf"),
        Value::Float(v) if v == f64::NEG_INFINITY => write!(out, "-Inf"),
        Value::Float(v) => write!(out, "{v}"),
    };
}

/// A label value as the format wants it: backslash, double quote and
/// line feed escaped.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Help text as the format wants it: backslash and line feed escaped
/// (a quote needs none there).
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_opens_with_help_and_type_and_escapes_what_it_must() {
        let mut text = Exposition::new();
        text.family("levee_x_bytes", Kind::Gauge, "Help with \\ and\nnewline.")
            .sample(&[("path", "a\"b\\c\nd")], 3_u64);
        text.single("levee_y_ratio", Kind::Gauge, "Y.", f64::INFINITY);
        text.single("levee_z_seconds", Kind::Gauge, "Z.", -2_i64);
        text.single("levee_w_ratio", Kind::Gauge, "W.", f64::NAN);
        assert_eq!(
            text.finish(),
            "# HELP levee_x_bytes Help with \\\\ and\\nnewline.\n\
             # TYPE levee_x_bytes gauge\n\
             levee_x_bytes{path=\"a\\\"b\\\\c\\nd\"} 3\n\
             # HELP levee_y_ratio Y.\n# TYPE levee_y_ratio gauge\nlevee_y_ratio +Inf\n\
             # HELP levee_z_seconds Z.\n# TYPE levee_z_seconds gauge\nlevee_z_seconds -2\n\
             # HELP levee_w_ratio W.\n# TYPE levee_w_ratio gauge\nlevee_w_ratio NaN\n"
        );
    }
}
