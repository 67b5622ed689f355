//! `levee load`'s input: JSON lines, one `{"key": "...", "value": "..."}`
//! object per line (`"value_base64"` instead of `"value"` for bytes that
//! are not text). Parsing is pure; reading is bounded per line.

use std::io::BufRead;

use base64::Engine;
use levee_node::proto::Limits;
use serde::Deserialize;

use super::Input;

/// One line as written in the file. Unknown fields are refused, so a typo
/// (`"valeu"`) is a reported line, not a key stored with an empty value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    key: String,
    value: Option<String>,
    value_base64: Option<String>,
}

/// A line's key and value, or why the line is not one.
pub fn parse_line(line: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let line: Line = serde_json::from_slice(line)
        .map_err(|e| format!(r#"not a JSON object {{"key": "...", "value": "..."}}: {e}"#))?;
    let value = match (line.value, line.value_base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| format!("value_base64 is not base64: {e}"))?,
        (Some(_), Some(_)) => return Err("has both value and value_base64; give one".into()),
        (None, None) => return Err("has no value (give value or value_base64)".into()),
    };
    Ok((line.key.into_bytes(), value))
}

/// What one bounded read of a line gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// A line (without its newline) is in the buffer.
    Line,
    /// The line was longer than the bound; it was skipped to its end.
    TooLong,
    /// The input is over.
    End,
}

/// Reads the next line into `buf`, holding at most `max` bytes of it: a
/// file without newlines cannot make the load allocate without bound.
pub fn read_line(input: &mut impl BufRead, max: usize, buf: &mut Vec<u8>) -> std::io::Result<Read> {
    buf.clear();
    let bound = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let n = std::io::Read::take(&mut *input, bound).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(Read::End);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        return Ok(Read::Line);
    }
    if buf.len() > max {
        input.skip_until(b'\n')?;
        buf.clear();
        return Ok(Read::TooLong);
    }
    Ok(Read::Line)
}

/// The inputs of a JSON-lines stream: a put per line, a report per bad
/// line, named by its number (from 1); blank lines are skipped. A read
/// error is reported and ends the stream.
pub fn inputs<R: BufRead>(mut input: R, limits: Limits) -> impl Iterator<Item = Input> {
    let max = max_line(&limits);
    let mut number = 0u64;
    let mut buf = Vec::new();
    let mut ended = false;
    std::iter::from_fn(move || {
        while !ended {
            number += 1;
            let what = format!("line {number}");
            let bad = |error: String, too_large| Input::Bad {
                what: what.clone(),
                error,
                too_large,
            };
            match read_line(&mut input, max, &mut buf) {
                Ok(Read::End) => ended = true,
                Err(e) => {
                    ended = true;
                    return Some(bad(format!("cannot read: {e}"), false));
                }
                Ok(Read::TooLong) => {
                    return Some(bad(format!("longer than {max} bytes; not read"), true));
                }
                Ok(Read::Line) if buf.iter().all(u8::is_ascii_whitespace) => {}
                Ok(Read::Line) => {
                    return Some(match parse_line(&buf) {
                        Ok((key, value)) => Input::put(what, key, value, &limits),
                        Err(error) => bad(error, false),
                    });
                }
            }
        }
        None
    })
}

/// The longest line read: the largest key and value, JSON-escaped at
/// worst (`\u0000` is 6 bytes for 1), and the object around them.
fn max_line(limits: &Limits) -> usize {
    let payload = u64::from(limits.max_value_bytes) + u64::from(limits.max_key_bytes);
    usize::try_from(payload * 6 + 1024).unwrap_or(usize::MAX)
}

/// Lines in a file (for the progress bar's length), read in blocks.
pub fn count_lines(path: &std::path::Path) -> std::io::Result<u64> {
    let mut input = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut lines = 0u64;
    loop {
        let block = input.fill_buf()?;
        if block.is_empty() {
            return Ok(lines);
        }
        lines += block.iter().filter(|b| **b == b'\n').count() as u64;
        let n = block.len();
        input.consume(n);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_line_gives_its_key_and_value_as_text_or_base64() {
        assert_eq!(
            parse_line(br#"{"key": "logs/1", "value": "hello"}"#),
            Ok((b"logs/1".to_vec(), b"hello".to_vec()))
        );
        assert_eq!(
            parse_line(br#"{"key": "bin", "value_base64": "AP8="}"#),
            Ok((b"bin".to_vec(), vec![0, 255]))
        );
    }

    #[test]
    fn a_bad_line_says_what_is_wrong() {
        let error = |line: &[u8]| parse_line(line).unwrap_err();
        assert!(error(b"{not json").contains("not a JSON object"));
        assert!(error(br#"{"value": "v"}"#).contains("missing field `key`"));
        assert!(error(br#"{"key": "k"}"#).contains("has no value"));
        assert!(error(br#"{"key": "k", "value": "a", "value_base64": "AA=="}"#).contains("both"));
        assert!(error(br#"{"key": "k", "valeu": "a"}"#).contains("unknown field"));
        assert!(error(br#"{"key": "k", "value_base64": "!!"}"#).contains("not base64"));
    }

    #[test]
    fn a_line_past_the_bound_is_skipped_and_the_next_one_read() {
        let mut input = std::io::Cursor::new(b"short\nxxxxxxxxxx\nlast".to_vec());
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut input, 5, &mut buf).unwrap(), Read::Line);
        assert_eq!(buf, b"short");
        assert_eq!(read_line(&mut input, 5, &mut buf).unwrap(), Read::TooLong);
        assert_eq!(read_line(&mut input, 5, &mut buf).unwrap(), Read::Line);
        assert_eq!(buf, b"last");
        assert_eq!(read_line(&mut input, 5, &mut buf).unwrap(), Read::End);
    }

    #[test]
    fn bad_lines_are_reported_by_their_number_and_the_rest_stored() {
        let file =
            b"{\"key\": \"a\", \"value\": \"1\"}\n\n{oops\n{\"key\": \"b\", \"value\": \"2\"}";
        let got: Vec<Input> = inputs(&file[..], Limits::default()).collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(matches!(&got[0], Input::Put { what, key, .. } if what == "line 1" && key == b"a"));
        assert!(
            matches!(&got[1], Input::Bad { what, error, .. } if what == "line 3" && error.contains("not a JSON object"))
        );
        assert!(matches!(&got[2], Input::Put { what, .. } if what == "line 4"));
    }

    proptest! {
        /// Whatever the key and value, a line written as JSON (value as
        /// text, or as base64) reads back as the same bytes.
        #[test]
        fn any_key_and_value_survive_a_line(
            key in ".*",
            value in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let as_base64 = base64::engine::general_purpose::STANDARD.encode(&value);
            let line = serde_json::json!({"key": key, "value_base64": as_base64}).to_string();
            prop_assert_eq!(parse_line(line.as_bytes()), Ok((key.clone().into_bytes(), value)));
            let text = String::from_utf8_lossy(key.as_bytes()).into_owned();
            let line = serde_json::json!({"key": key, "value": text}).to_string();
            prop_assert_eq!(parse_line(line.as_bytes()), Ok((key.clone().into_bytes(), text.into_bytes())));
        }

        /// Lines are read back as written, whatever bytes they hold.
        #[test]
        fn lines_within_the_bound_come_back_as_written(
            lines in proptest::collection::vec(proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n' && *b != b'\r'), 0..20), 0..10),
        ) {
            let mut input = std::io::Cursor::new(lines.join(&b'\n'));
            let mut buf = Vec::new();
            let mut read = Vec::new();
            while read_line(&mut input, 20, &mut buf).unwrap() == Read::Line {
                read.push(buf.clone());
            }
            // A last line left empty is the end of the one before it.
            let mut expected = lines;
            if expected.last().is_some_and(Vec::is_empty) {
                expected.pop();
            }
            prop_assert_eq!(read, expected);
        }
    }
}
