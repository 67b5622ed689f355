//! Durations and sizes as a person types them: `30s`, `10m`, `1h30m`,
//! `1500ms` (the humantime crate's forms) and `256MiB`, `512 KiB`, `1GB`
//! (bytesize's), or a bare number in the unit the setting's name says
//! (`_ms`: milliseconds, `_bytes`: bytes). One parser for every place a
//! person types one: `levee admin set`, the node's flags, its environment
//! and its TOML file.

use serde::Deserializer;

/// A value that is not a duration or a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not a duration.
    #[error("takes a duration such as 30s, 10m or 1500ms (a bare number is ms), not {0:?}")]
    Duration(String),
    /// Not a size.
    #[error("takes a size such as 256MiB or 512KiB (a bare number is bytes), not {0:?}")]
    Size(String),
    /// Too large for the setting.
    #[error("{0} is too large")]
    TooLarge(String),
}

/// A duration in milliseconds.
pub fn parse_millis(value: &str) -> Result<u64, UnitError> {
    let value = value.trim();
    if let Ok(ms) = value.parse::<u64>() {
        return Ok(ms);
    }
    humantime::parse_duration(value)
        .map_err(|_| UnitError::Duration(value.to_owned()))?
        .as_millis()
        .try_into()
        .map_err(|_| UnitError::TooLarge(value.to_owned()))
}

/// A size in bytes.
pub fn parse_bytes(value: &str) -> Result<u64, UnitError> {
    let value = value.trim();
    if let Ok(n) = value.parse::<u64>() {
        return Ok(n);
    }
    value
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| UnitError::Size(value.to_owned()))
}

/// A size in bytes that must fit 32 bits (frame, key and value limits).
pub fn parse_bytes_u32(value: &str) -> Result<u32, UnitError> {
    u32::try_from(parse_bytes(value)?).map_err(|_| UnitError::TooLarge(value.trim().to_owned()))
}

/// A number as written in a file: an integer, or a string with a unit.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Written {
    Number(u64),
    Text(String),
}

fn written<'de, D: Deserializer<'de>, T>(
    d: D,
    parse: fn(&str) -> Result<T, UnitError>,
    from_number: fn(u64) -> Result<T, UnitError>,
) -> Result<T, D::Error> {
    use serde::Deserialize as _;
    use serde::de::Error as _;
    match Written::deserialize(d)? {
        Written::Number(n) => from_number(n).map_err(D::Error::custom),
        Written::Text(text) => parse(&text).map_err(D::Error::custom),
    }
}

/// serde `deserialize_with`: milliseconds, as a number or `"30s"`.
pub fn de_millis<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    written(d, parse_millis, Ok)
}

/// serde `deserialize_with`: bytes, as a number or `"256MiB"`.
pub fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    written(d, parse_bytes, Ok)
}

/// serde `deserialize_with`: bytes within 32 bits, as a number or `"4MiB"`.
pub fn de_bytes_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    written(d, parse_bytes_u32, |n| {
        u32::try_from(n).map_err(|_| UnitError::TooLarge(n.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_and_sizes_as_typed() {
        assert_eq!(parse_millis("30s"), Ok(30_000));
        assert_eq!(parse_millis("10m"), Ok(600_000));
        assert_eq!(parse_millis("1h 30m"), Ok(5_400_000));
        assert_eq!(parse_millis("1500ms"), Ok(1500));
        assert_eq!(parse_millis(" 250 "), Ok(250));
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes_u32("4MiB"), Ok(4 << 20));
        assert!(matches!(
            parse_bytes_u32("8GiB"),
            Err(UnitError::TooLarge(_))
        ));
        let err = parse_millis("5 parsecs").unwrap_err().to_string();
        assert!(err.contains("30s") && err.contains("5 parsecs"), "{err}");
        let err = parse_bytes("lots").unwrap_err().to_string();
        assert!(err.contains("256MiB"), "{err}");
    }

    #[derive(serde::Deserialize, Debug)]
    struct File {
        #[serde(deserialize_with = "de_millis")]
        timeout_ms: u64,
        #[serde(deserialize_with = "de_bytes")]
        cache_bytes: u64,
        #[serde(deserialize_with = "de_bytes_u32")]
        max_value_bytes: u32,
    }

    #[test]
    fn a_file_may_write_a_number_or_a_unit() {
        let f: File =
            toml::from_str("timeout_ms = \"5s\"\ncache_bytes = 1024\nmax_value_bytes = \"1MiB\"")
                .unwrap();
        assert_eq!(
            (f.timeout_ms, f.cache_bytes, f.max_value_bytes),
            (5000, 1024, 1 << 20)
        );
        let err =
            toml::from_str::<File>("timeout_ms = \"soon\"\ncache_bytes = 1\nmax_value_bytes = 1")
                .unwrap_err()
                .to_string();
        assert!(err.contains("timeout_ms") && err.contains("soon"), "{err}");
        assert!(
            toml::from_str::<File>("timeout_ms = 1\ncache_bytes = 1\nmax_value_bytes = 5000000000")
                .is_err()
        );
    }

    proptest! {
        #[test]
        fn a_bare_number_is_itself_and_its_unit_form_agrees(n in 0u64..1_000_000_000) {
            prop_assert_eq!(parse_millis(&n.to_string()), Ok(n));
            prop_assert_eq!(parse_bytes(&n.to_string()), Ok(n));
            prop_assert_eq!(parse_millis(&format!("{n}ms")), Ok(n));
            prop_assert_eq!(parse_bytes(&format!("{n}B")), Ok(n));
        }

        #[test]
        fn any_text_is_a_value_or_an_error_never_a_panic(s in ".{0,40}") {
            let _ = parse_millis(&s);
            let _ = parse_bytes(&s);
            let _ = parse_bytes_u32(&s);
        }
    }
}
