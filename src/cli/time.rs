//! Points in time on the command line: `RFC 3339 | unix seconds` in,
//! RFC 3339 and unix seconds out, and the system clock.
//!
//! Tokens count time in whole unix seconds (u64). Reading is strict: RFC
//! 3339 must be in UTC (`Z` or `+00:00`) and in whole seconds, because a
//! time zone or a fraction silently dropped would move an expiry.

use std::time::{SystemTime, UNIX_EPOCH};

use super::CliError;

/// Parses `--expires`, `--not-before` and `--at`: unix seconds (digits
/// only) or an RFC 3339 UTC timestamp such as `2030-01-01T00:00:00Z`.
pub fn parse_time(s: &str) -> Result<u64, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map_err(|_| "unix seconds out of range".to_owned());
    }
    let t = humantime::parse_rfc3339(s).map_err(|e| {
        format!("{e}: expected unix seconds or RFC 3339 in UTC, like 2030-01-01T00:00:00Z")
    })?;
    let since = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "time is before 1970".to_owned())?;
    if since.subsec_nanos() != 0 {
        return Err("fractional seconds are not supported; tokens count whole seconds".to_owned());
    }
    Ok(since.as_secs())
}

/// The current unix time in whole seconds.
pub fn now() -> Result<u64, CliError> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| CliError::ReadingClock)
}

/// `secs` as RFC 3339 UTC, or `None` beyond year 9999: the library's
/// formatter, so `inspect` shows times the same way in text and JSON.
pub fn rfc3339(secs: u64) -> Option<String> {
    baton::inspect::rfc3339(secs)
}

/// `secs` for people: `2030-01-01T00:00:00Z (unix 1893456000)`.
pub fn human(secs: u64) -> String {
    match rfc3339(secs) {
        Some(t) => format!("{t} (unix {secs})"),
        None => format!("after year 9999 (unix {secs})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last second of year 9999.
    const MAX_FORMATTABLE: u64 = baton::inspect::MAX_RFC3339;

    #[test]
    fn reads_both_forms_strictly() {
        assert_eq!(parse_time("0"), Ok(0));
        assert_eq!(parse_time("1893456000"), Ok(1_893_456_000));
        assert_eq!(parse_time("2030-01-01T00:00:00Z"), Ok(1_893_456_000));
        assert!(parse_time("2030-01-01T00:00:00").is_err());
        assert!(parse_time("2030-01-01T00:00:00.5Z").is_err());
        assert!(parse_time("-5").is_err());
        assert!(parse_time("99999999999999999999999").is_err());
        assert!(parse_time("").is_err());
        assert!(parse_time("é").is_err());
    }

    #[test]
    fn formats_like_humantime() {
        use std::time::Duration;
        for secs in [
            0,
            1,
            59,
            86_399,
            951_782_400,
            1_800_000_000,
            4_102_444_800,
            MAX_FORMATTABLE,
        ] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(
                rfc3339(secs),
                Some(humantime::format_rfc3339_seconds(t).to_string()),
                "{secs}"
            );
        }
    }

    #[test]
    fn formats_every_u64() {
        assert_eq!(
            rfc3339(1_893_456_000).as_deref(),
            Some("2030-01-01T00:00:00Z")
        );
        assert_eq!(
            rfc3339(MAX_FORMATTABLE).as_deref(),
            Some("9999-12-31T23:59:59Z")
        );
        assert_eq!(rfc3339(MAX_FORMATTABLE + 1), None);
        assert_eq!(rfc3339(u64::MAX), None);
        assert!(human(u64::MAX).contains("after year 9999"));
    }
}
