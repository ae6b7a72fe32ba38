//! The only caller of the system clock. Everything else takes `now` as an
//! argument, so pure code stays deterministic under test.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

pub fn now_millis() -> Millis {
    let now = OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as Millis
}

/// RFC 3339 UTC with millisecond precision, e.g. `2026-11-24T19:01:06.123Z`.
pub fn rfc3339(ms: Millis) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => {
            let t = t.replace_nanosecond((ms.rem_euclid(1000) as u32) * 1_000_000);
            let t = t.unwrap_or(OffsetDateTime::UNIX_EPOCH);
            t.format(&Rfc3339)
                .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
        }
        Err(_) => String::from("1970-01-01T00:00:00Z"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_millis() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            super::rfc3339(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
    }
}
