//! Points in time as users write them on a command line: `--since 10m`, `--until 2026-11-23`.
//!
//! Accepted, like `docker logs` and `aws logs tail`:
//! - a duration back from now: `30s`, `10m`, `2h`, `7d`, `1w`, `1h30m`;
//! - RFC 3339: `2026-11-23T10:00:00Z`, `2026-11-23T10:00:00.5+01:00`; without an offset
//!   (`2026-11-23T10:00:00`) and a bare date (`2026-11-23`) are UTC;
//! - Unix seconds with an optional fraction: `1763892000`, `1763892000.250`.
//!
//! Everything resolves to nanoseconds since the epoch ([`parse_time_ns`], Docker's unit), or to
//! the millisecond that holds it ([`parse_time`], CloudWatch's unit).

use chrono::{DateTime, NaiveDate, NaiveDateTime};

/// A time the user wrote that is none of the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid time '{0}': use a duration back from now (30s, 10m, 2h, 7d), an RFC 3339 time (2026-11-23T10:00:00Z) or Unix seconds"
)]
pub struct InvalidTime(pub String);

/// Resolves `s` to epoch milliseconds (the millisecond that holds it); `now_ms` anchors
/// relative forms.
pub(crate) fn parse_time(s: &str, now_ms: i64) -> Result<i64, InvalidTime> {
    let bad = || InvalidTime(s.to_string());
    match point(s)? {
        Point::At(dt) => Ok(dt.timestamp_millis()),
        Point::Ago(d) => {
            Ok(now_ms.saturating_sub(i64::try_from(d.as_millis()).map_err(|_| bad())?))
        }
    }
}

/// Resolves `s` to epoch nanoseconds, Docker's precision (`docker logs --since` takes
/// `2026-11-23T10:00:00.123456789Z`); `now_ns` anchors relative forms. Times beyond what an
/// i64 of nanoseconds holds (before 1677, after 2262) saturate: `--since 2999-01-01` is
/// simply after everything.
pub(crate) fn parse_time_ns(s: &str, now_ns: i64) -> Result<i64, InvalidTime> {
    let bad = || InvalidTime(s.to_string());
    match point(s)? {
        Point::At(dt) => Ok(dt.timestamp_nanos_opt().unwrap_or(if dt.timestamp() > 0 {
            i64::MAX
        } else {
            i64::MIN
        })),
        Point::Ago(d) => Ok(now_ns.saturating_sub(i64::try_from(d.as_nanos()).map_err(|_| bad())?)),
    }
}

/// A time as written: a point, or a duration back from now.
enum Point {
    At(DateTime<chrono::Utc>),
    Ago(std::time::Duration),
}

fn point(s: &str) -> Result<Point, InvalidTime> {
    let t = s.trim();
    let bad = || InvalidTime(s.to_string());
    if t.is_empty() {
        return Err(bad());
    }
    if let Some(at) = unix_seconds(t) {
        return at.map(Point::At).ok_or_else(bad);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(Point::At(dt.to_utc()));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(t, f) {
            return Ok(Point::At(dt.and_utc()));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        let dt = d.and_hms_opt(0, 0, 0).ok_or_else(bad)?;
        return Ok(Point::At(dt.and_utc()));
    }
    // A duration must carry a unit: a bare number is Unix seconds (handled above).
    if t.starts_with(|c: char| c.is_ascii_digit())
        && let Ok(d) = humantime::parse_duration(t)
    {
        return Ok(Point::Ago(d));
    }
    Err(bad())
}

/// `Some(Some(time))` for Unix seconds (up to nine fraction digits count), `Some(None)` for
/// digits out of range, `None` for anything else.
fn unix_seconds(t: &str) -> Option<Option<DateTime<chrono::Utc>>> {
    let (int, frac) = match t.split_once('.') {
        Some((i, f)) => (i, f),
        None => (t, ""),
    };
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (t.contains('.') && frac.is_empty())
    {
        return None;
    }
    let Ok(secs) = int.parse::<i64>() else {
        return Some(None);
    };
    let mut ns = 0u32;
    for (i, b) in frac.bytes().take(9).enumerate() {
        ns += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
    }
    Some(DateTime::from_timestamp(secs, ns))
}

/// Milliseconds since the epoch, now.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `2026-11-23T10:00:00.123Z`: how events' times are printed and written.
pub(crate) fn format_rfc3339_ms(ms: i64) -> String {
    match DateTime::from_timestamp_millis(ms) {
        Some(dt) => dt.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_763_892_000_000; // 2025-11-23T10:00:00Z

    #[test]
    fn relative_durations_count_back_from_now() {
        assert_eq!(parse_time("30s", NOW), Ok(NOW - 30_000));
        assert_eq!(parse_time("10m", NOW), Ok(NOW - 600_000));
        assert_eq!(parse_time("2h", NOW), Ok(NOW - 7_200_000));
        assert_eq!(parse_time("7d", NOW), Ok(NOW - 7 * 86_400_000));
        assert_eq!(parse_time("1h30m", NOW), Ok(NOW - 5_400_000));
    }

    #[test]
    fn absolute_forms() {
        assert_eq!(parse_time("2025-11-23T10:00:00Z", 0), Ok(NOW));
        assert_eq!(parse_time("2025-11-23T11:00:00+01:00", 0), Ok(NOW));
        assert_eq!(parse_time("2025-11-23T10:00:00.250Z", 0), Ok(NOW + 250));
        assert_eq!(parse_time("2025-11-23T10:00:00", 0), Ok(NOW));
        assert_eq!(parse_time("2025-11-23", 0), Ok(NOW - 10 * 3_600_000));
        assert_eq!(parse_time("1763892000", 0), Ok(NOW));
        assert_eq!(parse_time("1763892000.25", 0), Ok(NOW + 250));
        assert_eq!(parse_time("1763892000.123456789", 0), Ok(NOW + 123));
    }

    #[test]
    fn nanoseconds_are_kept() {
        let ns = NOW * 1_000_000;
        assert_eq!(
            parse_time_ns("2025-11-23T10:00:00.123456789Z", 0),
            Ok(ns + 123_456_789)
        );
        assert_eq!(parse_time_ns("1763892000.000000001", 0), Ok(ns + 1));
        assert_eq!(parse_time_ns("1763892000.5", 0), Ok(ns + 500_000_000));
        assert_eq!(parse_time_ns("30s", ns), Ok(ns - 30_000_000_000));
        // Beyond what nanoseconds in an i64 hold (year 2262): saturated, never wrapped.
        assert_eq!(parse_time_ns("3000-01-01T00:00:00Z", 0), Ok(i64::MAX));
        assert!(parse_time("3000-01-01T00:00:00Z", 0).unwrap() > 0);
    }

    #[test]
    fn rejects_what_is_none_of_them() {
        for s in [
            "",
            "abc",
            "10",
            "-5m",
            "10 parsecs",
            "2025-13-01",
            "1.",
            ".5",
            "m10",
        ] {
            if s == "10" {
                // A bare number is Unix seconds, like docker logs.
                assert_eq!(parse_time(s, NOW), Ok(10_000));
                continue;
            }
            assert_eq!(parse_time(s, NOW), Err(InvalidTime(s.to_string())), "{s:?}");
        }
        assert!(parse_time("99999999999999999999", NOW).is_err());
    }

    #[test]
    fn formats_with_milliseconds() {
        assert_eq!(format_rfc3339_ms(NOW + 5), "2025-11-23T10:00:00.005Z");
    }
}
