//! Time in Tally is UTC microseconds since the Unix epoch, as an `i64`, everywhere
//! below the API (Arrow `Timestamp(Microsecond, "UTC")` in the store).

use chrono::{DateTime, TimeZone, Utc};

pub const MICROS_PER_SECOND: i64 = 1_000_000;
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// The current wall-clock time in microseconds.
pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// Parses the timestamp formats that analytics SDKs send: RFC 3339 / ISO 8601 with or
/// without an offset (no offset means UTC), or a number of milliseconds since the epoch
/// (as a JSON number or a numeric string).
pub fn parse_timestamp(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::String(s) => parse_timestamp_str(s),
        serde_json::Value::Number(n) => n.as_f64().and_then(millis_to_micros),
        _ => None,
    }
}

fn millis_to_micros(ms: f64) -> Option<i64> {
    // Plausible range: 1970 .. 2200. Anything else is garbage, not a timestamp.
    if ms.is_finite() && (0.0..7_258_118_400_000.0).contains(&ms) {
        Some((ms * 1000.0) as i64)
    } else {
        None
    }
}

pub fn parse_timestamp_str(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_micros());
    }
    // Naive forms without an offset, interpreted as UTC.
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f%#z",
    ] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Some(Utc.from_utc_datetime(&naive).timestamp_micros());
        }
    }
    if let Ok(dt) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%#z") {
        return Some(dt.timestamp_micros());
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return s.parse::<f64>().ok().and_then(millis_to_micros);
    }
    None
}

/// Formats microseconds as RFC 3339 with microsecond precision.
pub fn format_micros(micros: i64) -> String {
    match Utc.timestamp_micros(micros) {
        chrono::LocalResult::Single(dt) => dt.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        _ => micros.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_sdk_timestamp_shapes() {
        let expected = 1_700_000_000_123_000;
        assert_eq!(
            parse_timestamp(&json!("2023-11-14T22:13:20.123Z")),
            Some(expected)
        );
        assert_eq!(
            parse_timestamp(&json!("2023-11-14T23:13:20.123+01:00")),
            Some(expected)
        );
        assert_eq!(
            parse_timestamp(&json!("2023-11-14T22:13:20.123")),
            Some(expected)
        );
        assert_eq!(
            parse_timestamp(&json!("2023-11-14 22:13:20.123")),
            Some(expected)
        );
        assert_eq!(
            parse_timestamp(&json!(1_700_000_000_123i64)),
            Some(expected)
        );
        assert_eq!(parse_timestamp(&json!("1700000000123")), Some(expected));
        assert_eq!(parse_timestamp(&json!("yesterday")), None);
        assert_eq!(parse_timestamp(&json!(-5)), None);
        assert_eq!(parse_timestamp(&json!(true)), None);
    }

    #[test]
    fn formats_round_trip() {
        let t = 1_700_000_000_123_456;
        assert_eq!(parse_timestamp_str(&format_micros(t)), Some(t));
    }
}
