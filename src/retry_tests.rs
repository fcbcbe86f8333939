//! Tests of the backoff schedule and queue lifetime.

use super::*;
use std::time::UNIX_EPOCH;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn at(n: u64) -> SystemTime {
    UNIX_EPOCH + secs(n)
}

/// The defaults: 300 s doubling to 4000 s, 5 days, no warning.
fn schedule() -> Schedule {
    Schedule {
        min: secs(300),
        max: secs(4000),
        lifetime: secs(432_000),
        delay_warning: None,
    }
}

#[test]
fn backoff_doubles_to_the_cap() {
    let cases: &[(u32, u64)] = &[
        (0, 300),
        (1, 300),
        (2, 600),
        (3, 1200),
        (4, 2400),
        (5, 4000),
        (6, 4000),
        (64, 4000),
        (65, 4000),
        (1000, 4000),
        (u32::MAX, 4000),
    ];
    let s = schedule();
    for &(attempts, want) in cases {
        assert_eq!(s.backoff(attempts), secs(want), "backoff({attempts})");
    }
}

#[test]
fn backoff_edge_schedules_never_overflow() {
    // (min, max, attempts, want)
    let huge = Duration::MAX;
    let cases = [
        (secs(0), secs(4000), u32::MAX, secs(0)),
        (secs(1), huge, u32::MAX, huge),
        (secs(1), huge, 64, secs(1 << 63)),
        (huge, huge, u32::MAX, huge),
        (secs(500), secs(100), 9, secs(500)),
        (Duration::from_nanos(1), secs(1), 40, secs(1)),
        (
            secs(7 * 24 * 3600),
            secs(7 * 24 * 3600),
            u32::MAX,
            secs(7 * 24 * 3600),
        ),
    ];
    for (min, max, attempts, want) in cases {
        let s = Schedule {
            min,
            max,
            ..schedule()
        };
        assert_eq!(
            s.backoff(attempts),
            want,
            "backoff({attempts}) of {min:?}..{max:?}"
        );
        // next_attempt must not panic either, even from a late `now`.
        let now = at(4_000_000_000);
        let next = s.next_attempt(attempts, now, 0.5);
        assert!(
            next >= now,
            "next_attempt of {min:?}..{max:?} not before now"
        );
    }
}

#[test]
fn next_attempt_spreads_up_to_a_fifth_earlier() {
    let s = schedule();
    // (attempts, jitter, seconds after now)
    let cases: &[(u32, f64, u64)] = &[
        (1, 0.0, 300),
        (1, 0.5, 270),
        (1, 0.999_999, 240),
        (3, 0.25, 1140),
        (9, 0.0, 4000),
        (9, 0.5, 3600),
        (9, 1.0, 3200),
        (9, 7.0, 3200),
        (9, -3.0, 4000),
        (9, f64::NAN, 4000),
        (9, f64::INFINITY, 4000),
    ];
    let now = at(1_000_000);
    for &(attempts, jitter, want) in cases {
        let next = s.next_attempt(attempts, now, jitter);
        let got = next.duration_since(now).expect("in the future");
        assert_eq!(
            got.as_secs(),
            want,
            "next_attempt({attempts}, jitter {jitter})"
        );
    }
    for n in 0..1000 {
        let jitter = f64::from(n) / 1000.0;
        let got = s
            .next_attempt(2, now, jitter)
            .duration_since(now)
            .expect("future");
        assert!(
            (secs(480)..=secs(600)).contains(&got),
            "jitter {jitter}: {got:?} outside 80-100 % of 600 s"
        );
    }
}

#[test]
fn expiry_counts_from_arrival() {
    let s = schedule();
    // (arrival, now, expired)
    let cases = [
        (1000, 1000, false),
        (1000, 1000 + 431_999, false),
        (1000, 1000 + 432_000, true),
        (1000, 1000 + 999_999, true),
        (5000, 1000, false), // arrival in the future
    ];
    for (arrival, now, want) in cases {
        assert_eq!(
            s.expired(at(arrival), at(now)),
            want,
            "expired({arrival}, {now})"
        );
    }
    assert_eq!(s.expires_at(at(1000)), at(433_000), "expires_at");
    let zero = Schedule {
        lifetime: Duration::ZERO,
        ..schedule()
    };
    assert!(zero.expired(at(10), at(10)), "lifetime 0 expires at once");
    let forever = Schedule {
        lifetime: Duration::MAX,
        ..schedule()
    };
    assert!(
        !forever.expired(at(10), at(u64::from(u32::MAX))),
        "no overflow"
    );
}

#[test]
fn verdict_table() {
    let warn_after_4h = Schedule {
        delay_warning: Some(secs(4 * 3600)),
        ..schedule()
    };
    let arrival = at(100_000);
    let warned = RetryState {
        attempts: 5,
        delay_warned: Some(at(100_000 + 4 * 3600)),
        ..RetryState::default()
    };
    let fresh = |attempts| RetryState {
        attempts,
        ..RetryState::default()
    };
    // (what, schedule, state, seconds since arrival, verdict)
    let retry = |after: u64, warn| Verdict::Retry {
        at: at(100_000 + after),
        warn,
    };
    let cases = [
        ("first failure", schedule(), fresh(1), 0, retry(300, false)),
        (
            "third failure",
            schedule(),
            fresh(3),
            5000,
            retry(6200, false),
        ),
        (
            "capped",
            schedule(),
            fresh(30),
            10_000,
            retry(14_000, false),
        ),
        (
            "clamped to the deadline",
            schedule(),
            fresh(30),
            431_000,
            retry(432_000, false),
        ),
        (
            "at the deadline",
            schedule(),
            fresh(30),
            432_000,
            Verdict::Expired,
        ),
        (
            "long past",
            schedule(),
            fresh(30),
            900_000,
            Verdict::Expired,
        ),
        (
            "warning not yet due",
            warn_after_4h,
            fresh(2),
            14_399,
            retry(14_999, false),
        ),
        (
            "warning due",
            warn_after_4h,
            fresh(4),
            14_400,
            retry(16_800, true),
        ),
        (
            "warning sent once",
            warn_after_4h,
            warned.clone(),
            20_000,
            retry(24_000, false),
        ),
        (
            "expired beats warning",
            warn_after_4h,
            fresh(30),
            432_000,
            Verdict::Expired,
        ),
    ];
    for (what, s, state, since, want) in cases {
        let got = s.verdict(arrival, &state, at(100_000 + since), 0.0);
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn from_config_uses_the_settings() {
    let mut settings = crate::config::Settings::defaults("mx.example.org");
    settings.delivery.delay_warning = 3600;
    settings.delivery.retry.max_backoff = 7200;
    let config = settings.validate().expect("valid settings");
    let s = Schedule::from_config(&config);
    assert_eq!(
        s,
        Schedule {
            min: secs(300),
            max: secs(7200),
            lifetime: secs(432_000),
            delay_warning: Some(secs(3600)),
        },
        "schedule from {settings:?}"
    );
}
