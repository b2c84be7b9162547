//! Durations in lb.toml (and lbctl's flags) are strings such as `500ms`, `10s`, `1m` or `1h`.
//!
//! Parsing is `humantime`'s, the syntax systemd and many Rust tools share: a number and a unit,
//! optionally several (`1h 30m`), with fractions (`1.5s`) and long unit names too (`10sec`,
//! `2min`, `1hour`). That is a superset of what docs/contract.md promises; what this module adds is an error
//! message that quotes the value and shows the expected shape.

use std::time::Duration;

/// Parses a duration such as `500ms`, `10s`, `1m`, `1h` or `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "duration {text:?} has no unit (use ms, s, m or h, e.g. \"10s\")"
        ));
    }
    humantime::parse_duration(text).map_err(|error| {
        format!("duration {text:?} is not valid: {error} (e.g. \"500ms\", \"10s\", \"1m\", \"1h\")")
    })
}

/// The inverse of [`parse_duration`] for what lb writes into lb.toml (`10s`, `1m`, `1h 30m`,
/// `1s 500ms`).
pub fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_units_parse() {
        for (text, millis) in [
            ("500ms", 500),
            ("10s", 10_000),
            ("1m", 60_000),
            ("1h", 3_600_000),
            (" 2s ", 2_000),
            ("0s", 0),
            // humantime's wider syntax: combined and long units.
            ("1h 30m", 5_400_000),
            ("1m30s", 90_000),
            ("10sec", 10_000),
            ("2min", 120_000),
            ("1.5s", 1_500),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(millis)),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_durations_say_what_is_wrong_and_what_is_expected() {
        let no_unit = parse_duration("10").unwrap_err();
        assert!(no_unit.contains("\"10\" has no unit"), "{no_unit}");
        for text in [
            "",
            "10 parsecs",
            "ten seconds",
            "-1s",
            "s",
            "99999999999999999999h",
        ] {
            let error = parse_duration(text).unwrap_err();
            assert!(
                error.starts_with(&format!("duration {:?} ", text.trim()))
                    && error.contains("\"10s\""),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn formatting_round_trips() {
        for millis in [
            1, 500, 1_000, 1_500, 10_000, 60_000, 90_000, 3_600_000, 86_400_000,
        ] {
            let duration = Duration::from_millis(millis);
            let text = format_duration(duration);
            assert_eq!(parse_duration(&text), Ok(duration), "{text}");
        }
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
    }
}
