//! HTTP dates and readable durations for error messages.

use chrono::{DateTime, NaiveDateTime, TimeZone as _, Utc};

/// Formats an instant as an IMF-fixdate (`Mon, 23 Nov 2026 19:05:11 GMT`),
/// the only form RFC 9110 lets senders generate.
pub(super) fn format_http_date(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Parses an HTTP date. Senders must use IMF-fixdate, but RFC 9110 asks
/// recipients to accept the two obsolete forms too (RFC 850 and asctime).
pub(super) fn parse_http_date(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    if let Ok(at) = DateTime::parse_from_rfc2822(value) {
        return Some(at.with_timezone(&Utc));
    }
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
        .map(|naive| Utc.from_utc_datetime(&naive))
}

/// A duration in seconds as words, with at most two units
/// (`2 hours`, `1 minute 30 seconds`), for messages people read.
pub(super) fn human_duration(seconds: i64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400, "day"),
        (3_600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    let seconds = seconds.unsigned_abs();
    let words = |count: u64, unit: &str| {
        if count == 1 {
            format!("1 {unit}")
        } else {
            format!("{count} {unit}s")
        }
    };
    let n = UNITS
        .iter()
        .position(|(size, _)| seconds >= *size)
        .unwrap_or(UNITS.len() - 1);
    let (size, unit) = UNITS[n];
    let mut out = words(seconds / size, unit);
    if let Some((next_size, next_unit)) = UNITS.get(n + 1) {
        let count = (seconds % size) / next_size;
        if count > 0 {
            out.push(' ');
            out.push_str(&words(count, next_unit));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_http_dates() {
        let at = Utc
            .with_ymd_and_hms(2026, 11, 23, 19, 5, 11)
            .single()
            .unwrap_or_else(|| panic!("bad date"));
        assert_eq!(format_http_date(at), "Mon, 23 Nov 2026 19:05:11 GMT");
        for text in [
            "Mon, 23 Nov 2026 19:05:11 GMT",
            "Monday, 23-Nov-26 19:05:11 GMT",
            "Mon Nov 23 19:05:11 2026",
        ] {
            assert_eq!(parse_http_date(text), Some(at), "{text}");
        }
        assert_eq!(parse_http_date("wrong date"), None);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(7_200), "2 hours");
        assert_eq!(human_duration(-3_600), "1 hour");
        assert_eq!(human_duration(90), "1 minute 30 seconds");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(0), "0 seconds");
        assert_eq!(human_duration(90_061), "1 day 1 hour");
    }
}
