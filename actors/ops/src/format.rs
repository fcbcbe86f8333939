//! Small formatting helpers shared by the operator commands: dates,
//! durations and sizes for people.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Seconds since the epoch (0 for earlier times).
pub fn unix(when: SystemTime) -> u64 {
    when.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `when` as unix seconds in JSON, `null` for never.
pub fn opt_unix(when: Option<SystemTime>) -> Value {
    when.map_or(Value::Null, |t| json!(unix(t)))
}

/// `2025-11-27 12:34:56 UTC`.
pub fn date(when: SystemTime) -> String {
    let secs = i64::try_from(unix(when)).unwrap_or(i64::MAX);
    match chrono::DateTime::from_timestamp(secs, 0) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => format!("@{secs}"),
    }
}

/// A duration in its two largest units: `42s`, `5m`, `3h12m`, `2d4h`.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => match (s / 3600, s % 3600 / 60) {
            (h, 0) => format!("{h}h"),
            (h, m) => format!("{h}h{m}m"),
        },
        _ => match (s / 86_400, s % 86_400 / 3600) {
            (days, 0) => format!("{days}d"),
            (days, h) => format!("{days}d{h}h"),
        },
    }
}

/// `512 B`, `1.5 KiB`, `3.2 MiB`, `1.1 GiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `n thing` or `n things`.
pub fn count(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_table() {
        let cases: &[(u64, &str)] = &[
            (0, "0s"),
            (59, "59s"),
            (60, "1m"),
            (3599, "59m"),
            (3600, "1h"),
            (3660 + 59, "1h1m"),
            (86_399, "23h59m"),
            (86_400, "1d"),
            (2 * 86_400 + 4 * 3600 + 59, "2d4h"),
        ];
        for (secs, want) in cases {
            assert_eq!(age(Duration::from_secs(*secs)), *want, "{secs}s");
        }
    }

    #[test]
    fn sizes_and_dates() {
        let cases: &[(u64, &str)] = &[
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (5 << 20, "5.0 MiB"),
            (3 << 30, "3.0 GiB"),
        ];
        for (bytes, want) in cases {
            assert_eq!(size(*bytes), *want, "{bytes} bytes");
        }
        let when = UNIX_EPOCH + Duration::from_secs(1_764_250_000);
        assert_eq!(date(when), "2025-11-27 13:26:40 UTC");
        assert_eq!(count(1, "message"), "1 message");
        assert_eq!(count(2, "message"), "2 messages");
    }
}
